//! `builtin-echo`: a kind for tests and benchmarks, whose behaviour the payload controls.
//!
//! A payload that is not a JSON object with an `op` is echoed unchanged. Otherwise:
//!
//! | payload | does | answers |
//! |---|---|---|
//! | `{"op":"echo","data":X}` | nothing | `X` as JSON |
//! | `{"op":"sleep","ms":N}` | sleeps N ms (async) | `{"slept_ms":N}` |
//! | `{"op":"alloc","mb":N}` | allocates and touches N MB, then frees them | `{"allocated_mb":N}` |
//! | `{"op":"burn","ms":N}` | spins one CPU for N ms (blocking thread) | `{"burned_ms":N}` |
//! | `{"op":"exit","code":C}` | exits the process with code C, answering nothing | — |
//! | `{"op":"fail","message":M}` | fails the invocation | 500 `{"error":M}` |
//! | `{"op":"info"}` | nothing | `{"pid", "request_id", "memory_mb", "remaining_ms"}` |
//!
//! Not a production kind: it lets anyone who can invoke it exit or load the instance.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;

use super::protocol::{FunctionError, FunctionKind, InvokeContext};

/// The kind's registered name.
pub const BUILTIN_ECHO: &str = "builtin-echo";

/// Most memory one `alloc` may ask for: 64 GiB.
const MAX_ALLOC_MB: u64 = 64 * 1024;
/// Longest `sleep`/`burn`: one hour.
const MAX_MS: u64 = 3_600_000;

/// The test and benchmark kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinEcho;

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Op {
    Echo { data: serde_json::Value },
    Sleep { ms: u64 },
    Alloc { mb: u64 },
    Burn { ms: u64 },
    Exit { code: i32 },
    Fail { message: String },
    Info,
}

fn json(v: serde_json::Value) -> Bytes {
    Bytes::from(v.to_string())
}

impl FunctionKind for BuiltinEcho {
    async fn invoke(&self, ctx: InvokeContext, payload: Bytes) -> Result<Bytes, FunctionError> {
        let is_command = payload.first() == Some(&b'{')
            && serde_json::from_slice::<serde_json::Value>(&payload)
                .is_ok_and(|v| v.get("op").is_some());
        if !is_command {
            return Ok(payload);
        }
        let op: Op = serde_json::from_slice(&payload)
            .map_err(|e| FunctionError::BadPayload(format!("builtin-echo command: {e}")))?;
        match op {
            Op::Echo { data } => Ok(json(data)),
            Op::Sleep { ms } => {
                let ms = ms.min(MAX_MS);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(json(serde_json::json!({ "slept_ms": ms })))
            }
            Op::Alloc { mb } => {
                if mb > MAX_ALLOC_MB {
                    return Err(FunctionError::BadPayload(format!(
                        "alloc: {mb} MB exceeds {MAX_ALLOC_MB}"
                    )));
                }
                let touched = tokio::task::spawn_blocking(move || allocate_and_touch(mb))
                    .await
                    .map_err(|e| FunctionError::Failed(format!("alloc task: {e}")))?;
                Ok(json(
                    serde_json::json!({ "allocated_mb": mb, "checksum": touched }),
                ))
            }
            Op::Burn { ms } => {
                let ms = ms.min(MAX_MS);
                tokio::task::spawn_blocking(move || burn(Duration::from_millis(ms)))
                    .await
                    .map_err(|e| FunctionError::Failed(format!("burn task: {e}")))?;
                Ok(json(serde_json::json!({ "burned_ms": ms })))
            }
            Op::Exit { code } => std::process::exit(code),
            Op::Fail { message } => Err(FunctionError::Failed(message)),
            Op::Info => Ok(json(serde_json::json!({
                "pid": std::process::id(),
                "request_id": ctx.request_id,
                "memory_mb": ctx.memory_mb,
                "remaining_ms": ctx.remaining().as_millis() as u64,
            }))),
        }
    }
}

/// Allocates `mb` MB one MB at a time and writes every page, so the memory is really resident
/// (a cgroup only counts touched pages).
fn allocate_and_touch(mb: u64) -> u64 {
    let mut chunks: Vec<Vec<u8>> = Vec::with_capacity(mb as usize);
    let mut sum = 0u64;
    for i in 0..mb {
        let chunk = vec![(i % 251) as u8 + 1; 1 << 20];
        sum = sum.wrapping_add(u64::from(chunk[chunk.len() / 2]));
        chunks.push(chunk);
    }
    sum
}

fn burn(d: Duration) {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < d {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> InvokeContext {
        InvokeContext {
            request_id: "r1".into(),
            function: "f".into(),
            memory_mb: 128,
            deadline: tokio::time::Instant::now() + Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn echoes_plain_payloads_and_runs_commands() {
        let out = BuiltinEcho
            .invoke(ctx(), Bytes::from_static(b"hello"))
            .await
            .expect("echo");
        assert_eq!(&out[..], b"hello");
        let out = BuiltinEcho
            .invoke(ctx(), Bytes::from_static(br#"{"op":"alloc","mb":2}"#))
            .await
            .expect("alloc");
        assert!(
            std::str::from_utf8(&out)
                .expect("utf8")
                .contains("\"allocated_mb\":2")
        );
        let err = BuiltinEcho
            .invoke(ctx(), Bytes::from_static(br#"{"op":"nope"}"#))
            .await
            .expect_err("unknown op");
        assert!(matches!(err, FunctionError::BadPayload(_)));
    }
}
