//! What the tests that run the real `cumulus` binary share: a command with none of the caller's
//! `CUMULUS_*` or `RUST_LOG` settings, and waiting for a child with a bound.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Every process a test starts ends within this, or is killed and the test fails.
pub const LIMIT: Duration = Duration::from_secs(300);

/// The binary under test, with none of the caller's `CUMULUS_*` variables or `RUST_LOG`.
pub fn cumulus() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cumulus"));
    command.env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("CUMULUS_") {
            command.env_remove(key);
        }
    }
    command
}

/// Waits for `child` at most [`LIMIT`]; kills it past that and fails.
pub fn wait_bounded(mut child: Child) -> Output {
    let deadline = Instant::now() + LIMIT;
    loop {
        if child
            .try_wait()
            .expect("the child can be waited for")
            .is_some()
        {
            return child
                .wait_with_output()
                .expect("the child's output is readable");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child
                .wait_with_output()
                .expect("the killed child is reaped");
            panic!(
                "a cumulus process ran past {LIMIT:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `command` with its output captured, within [`LIMIT`].
pub fn run_bounded(command: &mut Command) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the cumulus binary starts");
    wait_bounded(child)
}
