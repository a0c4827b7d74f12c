//! Forward and backward of the small architectures (logreg, sparse_logreg, mlp, pmf, lenet,
//! transformer) against PyTorch; the method and `ref.py` are in `common/reference.rs`.

mod common;

use common::reference::check;

#[test]
fn logreg_matches_pytorch() {
    check(
        &common::tiny("logreg"),
        false,
        LOGREG_OUTPUT,
        LOGREG_GRADS,
        &[],
    );
}

#[test]
fn mlp_matches_pytorch() {
    check(&common::tiny("mlp"), false, MLP_OUTPUT, MLP_GRADS, &[]);
}

#[test]
fn sparse_logreg_matches_pytorch() {
    check(
        &common::tiny("sparse_logreg"),
        false,
        SPARSE_LOGREG_OUTPUT,
        SPARSE_LOGREG_GRADS,
        &[],
    );
}

#[test]
fn pmf_matches_pytorch() {
    check(&common::tiny("pmf"), false, PMF_OUTPUT, PMF_GRADS, &[]);
}

#[test]
fn lenet_matches_pytorch() {
    check(
        &common::tiny("lenet"),
        false,
        LENET_OUTPUT,
        LENET_GRADS,
        &[],
    );
}

#[test]
fn transformer_matches_pytorch() {
    check(
        &common::tiny("transformer"),
        false,
        TRANSFORMER_OUTPUT,
        TRANSFORMER_GRADS,
        &[],
    );
}

// Reference values: `python3 ref.py <arch>`, formatted one line per tensor.
const LOGREG_OUTPUT: &[f64] = &[
    0.39370144862903594,
    -1.1376412505371858,
    0.7813361584576471,
    0.2684404830210763,
    -0.9143731417837813,
    0.461932641464139,
    -1.5558254654226984,
    0.875264318714444,
    -1.2780731722342473,
];
const LOGREG_GRADS: &[(&str, f64)] = &[
    ("layers.0.weight", 8.017176817e+00),
    ("layers.0.bias", 2.353743007e+00),
];
const MLP_OUTPUT: &[f64] = &[
    -0.43959719045256607,
    -0.032854656287046306,
    0.351282200189426,
    -0.45511721560832463,
    -0.03127593310437226,
    0.36439051981158643,
    -0.4522116322015619,
    -0.022246467338279653,
    0.34769124996725903,
];
const MLP_GRADS: &[(&str, f64)] = &[
    ("layers.0.weight", 9.032260836e-02),
    ("layers.0.bias", 1.263673723e-01),
    ("layers.1.weight", -8.334654973e-03),
    ("layers.1.bias", 5.913343099e-01),
    ("layers.2.weight", -5.067148816e-01),
    ("layers.2.bias", 2.353743007e+00),
];
const SPARSE_LOGREG_OUTPUT: &[f64] = &[
    -0.40134148414989557,
    -0.14095601371439653,
    -0.5997300576176655,
];
const SPARSE_LOGREG_GRADS: &[(&str, f64)] = &[
    ("layers.0.weight", 3.945463289e+00),
    ("layers.0.bias", 2.780672104e+00),
];
const PMF_OUTPUT: &[f64] = &[0.6933058195033929, 0.3347105246267604, 0.5147409273799518];
const PMF_GRADS: &[(&str, f64)] = &[
    ("layers.0.user_factors", -1.357624468e+00),
    ("layers.0.item_factors", 6.271263647e-01),
    ("layers.0.user_bias", 2.744871325e+00),
    ("layers.0.item_bias", 2.618217289e+00),
    ("layers.0.global_bias", 2.780672104e+00),
];
const LENET_OUTPUT: &[f64] = &[
    0.1179291516388478,
    -2.2410931159538197,
    -2.5132668720483573,
    0.1140557731154385,
    -2.2463710501609455,
    -2.5153213242516888,
    0.11931405989431536,
    -2.257355972994314,
    -2.532917158363884,
];
const LENET_GRADS: &[(&str, f64)] = &[
    ("layers.0.weight", -1.441776594e+00),
    ("layers.0.bias", -1.669240219e-01),
    ("layers.1.weight", -6.417354857e+00),
    ("layers.1.bias", 8.297314751e-01),
    ("layers.2.weight", 2.903502462e+00),
    ("layers.2.bias", 2.754024000e-01),
    ("layers.3.weight", -1.224255610e+00),
    ("layers.3.bias", -6.042020768e-03),
    ("layers.4.weight", -5.845957340e-01),
    ("layers.4.bias", 2.353743007e+00),
];
const TRANSFORMER_OUTPUT: &[f64] = &[
    -0.17632715869745935,
    0.3917025214118241,
    0.46713132285677034,
    -0.1951192101308693,
    0.3935738812250313,
    0.4865477621968622,
    -0.16013224302377288,
    0.3858748979021656,
    0.44899199349072744,
];
const TRANSFORMER_GRADS: &[(&str, f64)] = &[
    ("layers.0.tok_emb.weight", -1.090950131e-02),
    ("layers.0.pos_emb.weight", -2.213902983e-02),
    ("layers.1.ln1.weight", -3.985598891e-02),
    ("layers.1.ln1.bias", 3.173699363e-02),
    ("layers.1.attn.q.weight", -5.646152004e-03),
    ("layers.1.attn.q.bias", 4.233897430e-04),
    ("layers.1.attn.k.weight", -9.518447826e-03),
    ("layers.1.attn.k.bias", -4.280043976e-18),
    ("layers.1.attn.v.weight", 2.051567986e-01),
    ("layers.1.attn.v.bias", -1.738468886e-01),
    ("layers.1.attn.o.weight", 1.134155775e-01),
    ("layers.1.attn.o.bias", -3.274358735e-02),
    ("layers.1.ln2.weight", -6.339557501e-02),
    ("layers.1.ln2.bias", 2.772216666e-02),
    ("layers.1.mlp.fc1.weight", -4.220190589e-02),
    ("layers.1.mlp.fc1.bias", 5.016097059e-03),
    ("layers.1.mlp.fc2.weight", 1.232520449e-01),
    ("layers.1.mlp.fc2.bias", -3.359629705e-02),
    ("layers.2.ln1.weight", -3.410684355e-02),
    ("layers.2.ln1.bias", 3.720260030e-02),
    ("layers.2.attn.q.weight", 6.785632588e-04),
    ("layers.2.attn.q.bias", -2.673223273e-04),
    ("layers.2.attn.k.weight", -1.784809208e-04),
    ("layers.2.attn.k.bias", -1.491693662e-18),
    ("layers.2.attn.v.weight", 1.891413424e-01),
    ("layers.2.attn.v.bias", -1.720332843e-01),
    ("layers.2.attn.o.weight", 1.357048933e-01),
    ("layers.2.attn.o.bias", -3.438910347e-02),
    ("layers.2.ln2.weight", -6.159082951e-02),
    ("layers.2.ln2.bias", -2.016275181e-02),
    ("layers.2.mlp.fc1.weight", -5.057090502e-02),
    ("layers.2.mlp.fc1.bias", -2.394125593e-03),
    ("layers.2.mlp.fc2.weight", 9.300778537e-02),
    ("layers.2.mlp.fc2.bias", -3.357568750e-02),
    ("layers.3.ln.weight", 1.375494858e+00),
    ("layers.3.ln.bias", -1.153987276e+00),
    ("layers.3.fc.weight", 1.085241454e+00),
    ("layers.3.fc.bias", 2.353743007e+00),
];
