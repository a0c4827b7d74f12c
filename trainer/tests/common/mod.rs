//! The job the trainer's end-to-end tests run: an MLP on the built-in digits, 2 workers, 20 steps
//! per invocation — small enough to reach 95% test accuracy in seconds.

/// The digits job's TOML: `head` goes before `[model]` (the name, an output folder), `workers`
/// under `[workers]` after `count = 2` (sync, significance), `stop` is the `[stop]` table's body.
pub fn digits_job(head: &str, workers: &str, stop: &str) -> String {
    format!(
        r#"
{head}
seed = 1
[model]
arch = "mlp"
input_dim = 64
hidden = [64]
n_outputs = 10
[data]
source = "builtin:digits"
[training]
loss = "cross_entropy"
batch_size = 32
optimizer = {{ kind = "adam", lr = 0.003 }}
steps_per_invocation = 20
[workers]
count = 2
{workers}
[stop]
{stop}
"#
    )
}
