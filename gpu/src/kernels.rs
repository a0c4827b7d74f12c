//! The CUDA kernels, as CUDA C source compiled with NVRTC when the CUDA backend starts (once per
//! device and architecture, then cached for the process). Each kernel is the device-side twin of
//! one [`Backend`](crate::backend::Backend) operation of the CPU backend, written in the same
//! order of arithmetic (divide by `sqrtf(var + eps)`, not multiply by `rsqrtf`; IEEE division and
//! square root, no fast math), so the two agree to rounding.
//!
//! Sizes are `unsigned long long` and every kernel walks its elements with a grid-stride loop,
//! so any element count the executor admits fits any launch grid. Ids arrive as `float` (exact
//! below 2^24) and have been range-checked on the host.
//!
//! `nvrtc_compiles_every_kernel` (in `tests/executor.rs`, `--features cuda`) compiles [`SOURCE`]
//! wherever libnvrtc can be loaded, GPU or not, and fails on any compile error.
//!
//! ```
//! use cumulus_gpu::kernels::{KERNELS, SOURCE};
//! for name in KERNELS {
//!     assert!(SOURCE.contains(&format!("void {name}(")), "{name}");
//! }
//! ```

/// Every kernel's entry point, as the CUDA backend loads them.
pub const KERNELS: &[&str] = &[
    "bias_act",
    "add_act",
    "softmax_rows",
    "layer_norm",
    "batch_norm",
    "im2col",
    "max_pool2x2",
    "reduce_axis",
    "embedding",
    "sparse_linear",
    "matrix_factorization",
    "transpose_0213",
    "act_backward",
    "loss_grad",
];

/// Threads per block of the row kernels (softmax, layer norm); a power of two.
pub const ROW_THREADS: u32 = 256;

/// The CUDA C source of every kernel.
pub const SOURCE: &str = r#"
typedef unsigned long long u64;

#define GRID_STRIDE(i, n) \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (u64)blockDim.x * gridDim.x)

#define ROW_THREADS 256
#define NEG_INF __int_as_float(0xff800000)

// Activation codes: the discriminants of backend::Act.
__device__ __forceinline__ float act_apply(int act, float x) {
    switch (act) {
    case 1: return x > 0.0f ? x : 0.0f;
    case 2: return tanhf(x);
    case 3: return (erff(x * 0.7071067811865476f) + 1.0f) * 0.5f * x;
    case 4: return 1.0f / (1.0f + expf(-x));
    default: return x;
    }
}

__device__ __forceinline__ float act_grad(int act, float z) {
    switch (act) {
    case 1: return z > 0.0f ? 1.0f : 0.0f;
    case 2: { float t = tanhf(z); return 1.0f - t * t; }
    case 3: {
        float cdf = 0.5f * (1.0f + erff(z * 0.7071067811865476f));
        float pdf = expf(-0.5f * z * z) * 0.3989423f;
        return cdf + z * pdf;
    }
    case 4: { float s = 1.0f / (1.0f + expf(-z)); return s * (1.0f - s); }
    default: return 1.0f;
    }
}

// x[o, d, i] = act(x[o, d, i] + bias[d]); has_bias == 0 adds nothing.
extern "C" __global__ void bias_act(float *x, const float *bias, int has_bias,
                                    u64 outer, u64 dim, u64 inner, int act) {
    u64 n = outer * dim * inner;
    GRID_STRIDE(i, n) {
        float b = has_bias ? bias[(i / inner) % dim] : 0.0f;
        x[i] = act_apply(act, x[i] + b);
    }
}

extern "C" __global__ void add_act(float *x, const float *y, u64 n, int act) {
    GRID_STRIDE(i, n) { x[i] = act_apply(act, x[i] + y[i]); }
}

// Block-wide reductions over ROW_THREADS threads.
__device__ float block_max(float v, float *shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) shared[threadIdx.x] = fmaxf(shared[threadIdx.x], shared[threadIdx.x + s]);
        __syncthreads();
    }
    float r = shared[0];
    __syncthreads();
    return r;
}

__device__ float block_sum(float v, float *shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
        __syncthreads();
    }
    float r = shared[0];
    __syncthreads();
    return r;
}

// One block per row (grid-stride over rows), ROW_THREADS threads per block.
extern "C" __global__ void softmax_rows(float *x, u64 rows, u64 cols) {
    __shared__ float shared[ROW_THREADS];
    for (u64 r = blockIdx.x; r < rows; r += gridDim.x) {
        float *row = x + r * cols;
        float m = NEG_INF;
        for (u64 j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, row[j]);
        m = block_max(m, shared);
        float s = 0.0f;
        for (u64 j = threadIdx.x; j < cols; j += blockDim.x) {
            float e = expf(row[j] - m);
            row[j] = e;
            s += e;
        }
        s = block_sum(s, shared);
        for (u64 j = threadIdx.x; j < cols; j += blockDim.x) row[j] = row[j] / s;
    }
}

extern "C" __global__ void layer_norm(const float *x, float *y, const float *w, const float *b,
                                      u64 rows, u64 cols, float eps) {
    __shared__ float shared[ROW_THREADS];
    for (u64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        float s = 0.0f;
        for (u64 j = threadIdx.x; j < cols; j += blockDim.x) s += xr[j];
        float mean = block_sum(s, shared) / (float)cols;
        float v = 0.0f;
        for (u64 j = threadIdx.x; j < cols; j += blockDim.x) {
            float c = xr[j] - mean;
            v += c * c;
        }
        float var = block_sum(v, shared) / (float)cols;
        float denom = sqrtf(var + eps);
        for (u64 j = threadIdx.x; j < cols; j += blockDim.x)
            yr[j] = (xr[j] - mean) / denom * w[j] + b[j];
    }
}

// Eval-mode batch norm of [n, c, hw] in place, then the activation.
extern "C" __global__ void batch_norm(float *x, const float *mean, const float *var,
                                      const float *w, const float *b,
                                      u64 n, u64 c, u64 hw, float eps, int act) {
    u64 total = n * c * hw;
    GRID_STRIDE(i, total) {
        u64 ch = (i / hw) % c;
        float denom = sqrtf(var[ch] + eps);
        x[i] = act_apply(act, (x[i] - mean[ch]) / denom * w[ch] + b[ch]);
    }
}

// [n, c, h, w] -> [n, c*k*k, oh*ow], zero padding.
extern "C" __global__ void im2col(const float *x, float *cols, u64 n, u64 c, u64 h, u64 w,
                                  u64 k, u64 pad, u64 stride, u64 oh, u64 ow) {
    u64 rows = c * k * k;
    u64 ncols = oh * ow;
    u64 total = n * rows * ncols;
    GRID_STRIDE(i, total) {
        u64 col = i % ncols;
        u64 row = (i / ncols) % rows;
        u64 img = i / (ncols * rows);
        u64 kx = row % k;
        u64 ky = (row / k) % k;
        u64 ch = row / (k * k);
        long long iy = (long long)((col / ow) * stride + ky) - (long long)pad;
        long long ix = (long long)((col % ow) * stride + kx) - (long long)pad;
        float v = 0.0f;
        if (iy >= 0 && ix >= 0 && iy < (long long)h && ix < (long long)w)
            v = x[((img * c + ch) * h + (u64)iy) * w + (u64)ix];
        cols[i] = v;
    }
}

extern "C" __global__ void max_pool2x2(const float *x, float *y, u64 nc, u64 h, u64 w) {
    u64 oh = h / 2, ow = w / 2;
    u64 total = nc * oh * ow;
    GRID_STRIDE(i, total) {
        u64 ox = i % ow;
        u64 oy = (i / ow) % oh;
        u64 p = i / (ow * oh);
        const float *src = x + p * h * w + (2 * oy) * w + 2 * ox;
        y[i] = fmaxf(fmaxf(fmaxf(src[0], src[1]), src[w]), src[w + 1]);
    }
}

// y[o, i] = scale * sum_d x[o, d, i], summed in order of d.
extern "C" __global__ void reduce_axis(const float *x, float *y, u64 outer, u64 dim, u64 inner,
                                       float scale) {
    u64 total = outer * inner;
    GRID_STRIDE(t, total) {
        u64 o = t / inner, i = t % inner;
        float s = 0.0f;
        for (u64 d = 0; d < dim; ++d) s += x[(o * dim + d) * inner + i];
        y[t] = s * scale;
    }
}

extern "C" __global__ void embedding(const float *ids, const float *table, const float *pos,
                                     float *y, u64 tokens, u64 seq, u64 d) {
    u64 total = tokens * d;
    GRID_STRIDE(i, total) {
        u64 t = i / d, j = i % d;
        u64 row = (u64)ids[t];
        y[i] = table[row * d + j] + pos[(t % seq) * d + j];
    }
}

extern "C" __global__ void sparse_linear(const float *pairs, const float *w, const float *bias,
                                         float *y, u64 batch, u64 k, u64 n_out) {
    u64 total = batch * n_out;
    GRID_STRIDE(i, total) {
        u64 b = i / n_out, o = i % n_out;
        float s = 0.0f;
        for (u64 p = 0; p < k; ++p) {
            const float *pair = pairs + (b * k + p) * 2;
            s += w[(u64)pair[0] * n_out + o] * pair[1];
        }
        y[i] = s + bias[o];
    }
}

extern "C" __global__ void matrix_factorization(const float *ids, const float *uf,
                                                const float *itf, const float *ub,
                                                const float *ib, const float *gb, float *y,
                                                u64 batch, u64 factors) {
    GRID_STRIDE(b, batch) {
        u64 u = (u64)ids[2 * b], it = (u64)ids[2 * b + 1];
        float dot = 0.0f;
        for (u64 j = 0; j < factors; ++j) dot += uf[u * factors + j] * itf[it * factors + j];
        y[b] = ((dot + ub[u]) + ib[it]) + gb[0];
    }
}

// y[a, c, b, d] = x[a, b, c, d]
extern "C" __global__ void transpose_0213(const float *x, float *y, u64 a, u64 b, u64 c, u64 d) {
    u64 total = a * b * c * d;
    GRID_STRIDE(i, total) {
        u64 id = i % d;
        u64 ic = (i / d) % c;
        u64 ib = (i / (d * c)) % b;
        u64 ia = i / (d * c * b);
        y[((ia * c + ic) * b + ib) * d + id] = x[i];
    }
}

extern "C" __global__ void act_backward(const float *z, float *g, u64 n, int act) {
    GRID_STRIDE(i, n) { g[i] *= act_grad(act, z[i]); }
}

// Loss codes: 0 cross-entropy, 1 MSE, 2 binary logistic. One thread per row.
extern "C" __global__ void loss_grad(int loss, const float *out, const float *targets,
                                     float *grad, float *row_loss, u64 rows, u64 cols) {
    float inv = 1.0f / (float)rows;
    GRID_STRIDE(r, rows) {
        const float *x = out + r * cols;
        float *g = grad + r * cols;
        float y = targets[r];
        if (loss == 0) {
            u64 label = (u64)y;
            float m = NEG_INF;
            for (u64 j = 0; j < cols; ++j) m = fmaxf(m, x[j]);
            float s = 0.0f;
            for (u64 j = 0; j < cols; ++j) s += expf(x[j] - m);
            float lse = logf(s);
            row_loss[r] = -((x[label] - m) - lse);
            for (u64 j = 0; j < cols; ++j) {
                float p = expf(x[j] - m) / s;
                g[j] = (p - (j == label ? 1.0f : 0.0f)) * inv;
            }
        } else if (loss == 1) {
            float d = x[0] - y;
            row_loss[r] = d * d;
            g[0] = 2.0f * d * inv;
        } else {
            float v = x[0];
            row_loss[r] = fmaxf(v, 0.0f) - v * y + logf(1.0f + expf(-fabsf(v)));
            g[0] = (1.0f / (1.0f + expf(-v)) - y) * inv;
        }
    }
}
"#;

/// The code the `loss_grad` kernel switches on.
pub fn loss_code(loss: cumulus_models::Loss) -> i32 {
    match loss {
        cumulus_models::Loss::CrossEntropy => 0,
        cumulus_models::Loss::Mse => 1,
        cumulus_models::Loss::BinaryLogistic => 2,
    }
}
