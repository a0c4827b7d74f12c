//! Shared machinery of the PyTorch reference tests (`reference_*.rs`).
//!
//! Each model gets deterministic weights from a formula of the tensor's name (so PyTorch and this
//! crate agree without shipping a checkpoint), runs on a deterministic input of 3 examples, and
//! its output `out` is compared element-wise. Then `L = sum(out * c)` with `c[j] = cos(0.3 j)` is
//! back-propagated and each parameter's gradient `g` is compared through the projection
//! `sum_i g[i] * cos(0.13 i)` (one number per tensor, sensitive to any wrong element). The models
//! run in inference mode; BatchNorm's training mode (batch statistics, running-statistics update)
//! is checked on its own, where it is well conditioned.
//!
//! Both sides compute in float64: the deep ResNet with these weights is ill-conditioned enough that
//! PyTorch's own float32 and float64 gradients differ by a few percent, which would hide real bugs.
//!
//! The Python that produced every number is `ref.py`, pasted verbatim at the end of this file
//! (`python3 ref.py <arch>`, torch 2.15, CPU); each test file holds the values of its architectures.

use candle_core::{DType, Device, Tensor};
use cumulus_models::{Model, ModelConfig};

/// The weight formula of `ref.py`: `0.4 sin(0.61 i + 0.37 s)`, `s` the byte sum of the name mod 97
/// (plus 1 for BatchNorm running variances, which must be positive; convolution kernels divided by
/// `sqrt(fan_in)`).
pub fn formula(name: &str, shape: &[usize], dev: &Device) -> Tensor {
    let s = (name.bytes().map(u64::from).sum::<u64>() % 97) as f64;
    let n: usize = shape.iter().product();
    let shift = if name.ends_with("running_var") {
        1.0
    } else {
        0.0
    };
    // Convolution kernels are scaled by 1/sqrt(fan_in) so eval-mode activations stay O(1).
    let scale = if shape.len() == 4 {
        1.0 / ((n / shape[0]) as f64).sqrt()
    } else {
        1.0
    };
    let v: Vec<f64> = (0..n)
        .map(|i| shift + 0.4 * (0.61 * i as f64 + 0.37 * s).sin() * scale)
        .collect();
    Tensor::from_vec(v, shape, dev).expect("formula shape")
}

/// `sum_i t[i] * cos(0.13 i)` in f64.
pub fn projection(t: &Tensor) -> f64 {
    let v = t
        .to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .expect("float tensor");
    v.iter()
        .enumerate()
        .map(|(i, x)| x * (0.13 * i as f64).cos())
        .sum()
}

pub fn close(got: f64, want: f64, scale: f64, what: &str) {
    // 1e-5 relative: candle's erf (inside GELU) is accurate to about 1e-7, not to f64 precision.
    let tol = 1e-10 * scale.max(1.0) + 1e-5 * want.abs();
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, PyTorch {want} (tolerance {tol})"
    );
}

pub fn check(
    cfg: &ModelConfig,
    train: bool,
    output: &[f64],
    grads: &[(&str, f64)],
    buffers: &[(&str, f64)],
) {
    let dev = Device::Cpu;
    let model = Model::with_options(cfg, &dev, 0, DType::F64).expect("reference configs build");
    for p in model.param_infos() {
        model
            .set_param(&p.name, &formula(&p.name, &p.shape, &dev))
            .expect("formula fits");
    }
    let xs = super::input(cfg, 3, DType::F64, &dev);
    let out = model.forward_t(&xs, train).expect("forward");
    let got: Vec<f64> = out
        .to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("output");
    assert_eq!(got.len(), output.len(), "{} output size", cfg.arch());
    let scale = output.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(output).enumerate() {
        close(*g, *w, scale, &format!("{} output[{i}]", cfg.arch()));
    }

    let n = out.elem_count();
    let c: Vec<f64> = (0..n).map(|j| (0.3 * j as f64).cos()).collect();
    let c = Tensor::from_vec(c, out.shape(), &dev).expect("weights of L");
    let loss = (&out * &c).and_then(|t| t.sum_all()).expect("L");
    let store = loss.backward().expect("backward");
    let trainable = model.named_vars(true);
    assert_eq!(
        trainable.len(),
        grads.len(),
        "{}: one reference per parameter",
        cfg.arch()
    );
    let scale = grads.iter().fold(0.0f64, |m, (_, v)| m.max(v.abs()));
    for ((name, var), (ref_name, want)) in trainable.iter().zip(grads) {
        assert_eq!(name, ref_name, "parameter order");
        let g = store
            .get(var)
            .unwrap_or_else(|| panic!("{name} got no gradient"));
        close(projection(g), *want, scale, &format!("grad of {name}"));
    }
    for (name, want) in buffers {
        let var = model
            .var(name)
            .unwrap_or_else(|| panic!("no buffer {name}"));
        close(
            projection(var.as_tensor()),
            *want,
            1.0,
            &format!("buffer {name}"),
        );
    }
}

// ref.py, verbatim:
// import math, numpy as np, torch, torch.nn.functional as F
// torch.set_default_dtype(torch.float64)
//
// def formula(name, shape):
//     s = sum(name.encode()) % 97
//     n = int(np.prod(shape)) if len(shape) else 1
//     i = np.arange(n, dtype=np.float64)
//     v = 0.4 * np.sin(0.61 * i + 0.37 * s)
//     if name.endswith("running_var"):
//         v = 1.0 + v
//     if len(shape) == 4:  # conv kernels: scaled by 1/sqrt(fan_in) so eval-mode activations stay O(1)
//         v = v / math.sqrt(n / shape[0])
//     return torch.tensor(v.astype(np.float64).reshape(shape), requires_grad=not name.split(".")[-1].startswith("running"))
//
// def dense_input(shape):
//     n = int(np.prod(shape))
//     return torch.tensor(np.sin(np.arange(n) * 0.37).astype(np.float32).astype(np.float64).reshape(shape))
//
// def report(P, out, buffers=()):
//     c = torch.tensor(np.cos(0.3 * np.arange(out.numel())).astype(np.float64)).reshape(out.shape)
//     (out * c).sum().backward()
//     print("output:", [float(x) for x in out.detach().flatten()])
//     for name, t in P.items():
//         if t.requires_grad:
//             g = t.grad.detach().double().flatten()
//             r = torch.tensor(np.cos(0.13 * np.arange(g.numel())))
//             print(f'("{name}", {float((g * r).sum()):.9e}),')
//     for name in buffers:
//         t = P[name].detach().double().flatten()
//         r = torch.tensor(np.cos(0.13 * np.arange(t.numel())))
//         print(f'buffer ("{name}", {float((t * r).sum()):.9e}),')
//
// def params(spec):
//     return {n: formula(n, s) for n, s in spec}
//
// def lin(P, p, x):
//     return x @ P[p + "weight"].T + P[p + "bias"]
//
// import sys  # usage: python3 ref.py <arch>  (float64 throughout)
// arch = sys.argv[1]
// B = 3
// if arch == "logreg":
//     P = params([("layers.0.weight", (3, 5)), ("layers.0.bias", (3,))])
//     report(P, lin(P, "layers.0.", dense_input((B, 5))))
// elif arch == "mlp":
//     P = params([("layers.0.weight", (5, 6)), ("layers.0.bias", (5,)), ("layers.1.weight", (4, 5)), ("layers.1.bias", (4,)), ("layers.2.weight", (3, 4)), ("layers.2.bias", (3,))])
//     h = torch.tanh(lin(P, "layers.0.", dense_input((B, 6))))
//     h = torch.tanh(lin(P, "layers.1.", h))
//     report(P, lin(P, "layers.2.", h))
// elif arch == "sparse_logreg":
//     k, nf = 4, 11
//     x = []
//     for b in range(B):
//         for j in range(k):
//             x += [0.0, 0.0] if j == k - 1 else [float((b * 7 + j * 3) % nf), 0.5 + 0.25 * j - 0.1 * b]
//     x = torch.tensor(np.array(x, dtype=np.float32).reshape(B, k, 2))
//     P = params([("layers.0.weight", (nf, 1)), ("layers.0.bias", (1,))])
//     idx, val = x[..., 0].long(), x[..., 1:]
//     report(P, (P["layers.0.weight"][idx] * val).sum(1) + P["layers.0.bias"])
// elif arch == "pmf":
//     nu, ni, k = 4, 5, 3
//     ids = torch.tensor([[b % nu, (b * 3 + 1) % ni] for b in range(B)])
//     P = params([("layers.0.user_factors", (nu, k)), ("layers.0.item_factors", (ni, k)), ("layers.0.user_bias", (nu,)), ("layers.0.item_bias", (ni,)), ("layers.0.global_bias", (1,))])
//     u, i = ids[:, 0], ids[:, 1]
//     out = (P["layers.0.user_factors"][u] * P["layers.0.item_factors"][i]).sum(1) + P["layers.0.user_bias"][u] + P["layers.0.item_bias"][i] + P["layers.0.global_bias"]
//     report(P, out)
// elif arch == "lenet":
//     P = params([("layers.0.weight", (6, 1, 5, 5)), ("layers.0.bias", (6,)), ("layers.1.weight", (16, 6, 5, 5)), ("layers.1.bias", (16,)), ("layers.2.weight", (120, 16)), ("layers.2.bias", (120,)), ("layers.3.weight", (84, 120)), ("layers.3.bias", (84,)), ("layers.4.weight", (3, 84)), ("layers.4.bias", (3,))])
//     x = dense_input((B, 1, 12, 12))
//     h = F.max_pool2d(F.relu(F.conv2d(x, P["layers.0.weight"], P["layers.0.bias"], padding=2)), 2)
//     h = F.max_pool2d(F.relu(F.conv2d(h, P["layers.1.weight"], P["layers.1.bias"])), 2)
//     h = F.relu(lin(P, "layers.2.", h.flatten(1)))
//     h = F.relu(lin(P, "layers.3.", h))
//     report(P, lin(P, "layers.4.", h))
// elif arch == "resnet":
//     spec, buffers = [], []
//     def bn(p, c):
//         spec.extend([(p + "weight", (c,)), (p + "bias", (c,)), (p + "running_mean", (c,)), (p + "running_var", (c,))])
//         buffers.extend([p + "running_mean", p + "running_var"])
//     spec.append(("layers.0.conv.weight", (64, 3, 3, 3))); bn("layers.0.bn.", 64)
//     blocks, cin, li = [], 64, 1
//     for stage in range(4):
//         cout = 64 << stage
//         for b in range(2):
//             stride = 2 if stage > 0 and b == 0 else 1
//             p = f"layers.{li}."
//             spec.append((p + "conv1.weight", (cout, cin, 3, 3))); bn(p + "bn1.", cout)
//             spec.append((p + "conv2.weight", (cout, cout, 3, 3))); bn(p + "bn2.", cout)
//             short = stride != 1 or cin != cout
//             if short:
//                 spec.append((p + "shortcut.conv.weight", (cout, cin, 1, 1))); bn(p + "shortcut.bn.", cout)
//             blocks.append((p, stride, short)); cin = cout; li += 1
//     spec += [(f"layers.{li}.fc.weight", (3, 512)), (f"layers.{li}.fc.bias", (3,))]
//     P = params(spec)
//     def BN(p, x):
//         return F.batch_norm(x, P[p + "running_mean"], P[p + "running_var"], P[p + "weight"], P[p + "bias"], training=False, momentum=0.1, eps=1e-5)
//     x = dense_input((B, 3, 16, 16))
//     h = F.relu(BN("layers.0.bn.", F.conv2d(x, P["layers.0.conv.weight"], padding=1)))
//     for p, stride, short in blocks:
//         o = F.relu(BN(p + "bn1.", F.conv2d(h, P[p + "conv1.weight"], stride=stride, padding=1)))
//         o = BN(p + "bn2.", F.conv2d(o, P[p + "conv2.weight"], padding=1))
//         s = BN(p + "shortcut.bn.", F.conv2d(h, P[p + "shortcut.conv.weight"], stride=stride)) if short else h
//         h = F.relu(o + s)
//     report(P, lin(P, f"layers.{li}.fc.", h.mean((2, 3))))
// elif arch == "batchnorm":
//     P = params([("bn.weight", (4,)), ("bn.bias", (4,)), ("bn.running_mean", (4,)), ("bn.running_var", (4,))])
//     x = dense_input((3, 4, 2, 3))
//     out = F.batch_norm(x, P["bn.running_mean"], P["bn.running_var"], P["bn.weight"], P["bn.bias"], training=True, momentum=0.1, eps=1e-5)
//     report(P, out, ["bn.running_mean", "bn.running_var"])
// elif arch == "transformer":
//     V, S, D, H, L, FF, C = 7, 5, 8, 2, 2, 12, 3
//     spec = [("layers.0.tok_emb.weight", (V, D)), ("layers.0.pos_emb.weight", (S, D))]
//     for l in range(1, L + 1):
//         p = f"layers.{l}."
//         spec += [(p + "ln1.weight", (D,)), (p + "ln1.bias", (D,))]
//         for m in "qkvo":
//             spec += [(p + f"attn.{m}.weight", (D, D)), (p + f"attn.{m}.bias", (D,))]
//         spec += [(p + "ln2.weight", (D,)), (p + "ln2.bias", (D,)), (p + "mlp.fc1.weight", (FF, D)), (p + "mlp.fc1.bias", (FF,)), (p + "mlp.fc2.weight", (D, FF)), (p + "mlp.fc2.bias", (D,))]
//     p = f"layers.{L + 1}."
//     spec += [(p + "ln.weight", (D,)), (p + "ln.bias", (D,)), (p + "fc.weight", (C, D)), (p + "fc.bias", (C,))]
//     P = params(spec)
//     seq = S - 1
//     ids = torch.tensor([(i * 5 + 2) % V for i in range(B * seq)]).reshape(B, seq)
//     def LN(p, x):
//         return F.layer_norm(x, (D,), P[p + "weight"], P[p + "bias"], eps=1e-5)
//     h = P["layers.0.tok_emb.weight"][ids] + P["layers.0.pos_emb.weight"][:seq]
//     for l in range(1, L + 1):
//         p = f"layers.{l}."
//         a = LN(p + "ln1.", h)
//         q, k, v = [lin(P, p + f"attn.{m}.", a).reshape(B, seq, H, D // H).transpose(1, 2) for m in "qkv"]
//         att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // H), -1) @ v
//         h = h + lin(P, p + "attn.o.", att.transpose(1, 2).reshape(B, seq, D))
//         h = h + lin(P, p + "mlp.fc2.", F.gelu(lin(P, p + "mlp.fc1.", LN(p + "ln2.", h))))
//     p = f"layers.{L + 1}."
//     report(P, lin(P, p + "fc.", LN(p + "ln.", h).mean(1)))
