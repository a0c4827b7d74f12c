//! The crate's one error type, [`RuntimeError`]: why the platform could not load its configuration,
//! start an instance, or return an invocation's result.

use std::path::PathBuf;
use std::time::Duration;

/// How an instance process ended, as far as the platform can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceExit {
    /// The process exited by itself with this code.
    Code(i32),
    /// The process was killed by this signal, and no memory limit was involved.
    Signal(i32),
    /// The process hit its memory limit (cgroup OOM kill, or an allocation refused under an rlimit).
    OutOfMemory {
        /// The limit it ran under, in MB.
        limit_mb: u32,
    },
    /// The platform stopped it (keep-alive expiry, deadline, shutdown).
    Stopped,
}

impl std::fmt::Display for InstanceExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InstanceExit::Code(code) => write!(f, "exited with code {code}"),
            InstanceExit::Signal(sig) => write!(f, "killed by signal {sig}"),
            InstanceExit::OutOfMemory { limit_mb } => {
                write!(f, "out of memory (limit {limit_mb} MB)")
            }
            InstanceExit::Stopped => write!(f, "stopped by the platform"),
        }
    }
}

/// What a function's handler reported (the instance answered, but not with a result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionFailure {
    /// The payload was refused by the handler (HTTP 400 from the instance).
    BadPayload,
    /// The handler failed (HTTP 5xx from the instance).
    Failed,
    /// The instance was busy with its maximum number of concurrent invocations (HTTP 429).
    Busy,
}

/// Errors of the function platform.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A configuration file could not be read, parsed or validated.
    #[error("config file {}: {reason}", path.display())]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// The key and what is wrong with it.
        reason: String,
    },
    /// A configuration given in memory is invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The function name is not acceptable (empty, too long, or characters outside `[a-z0-9-]`).
    #[error("invalid function name {0:?}: use 1-63 characters from [a-z0-9-]")]
    InvalidFunctionName(String),
    /// The payload is larger than the configured maximum.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Payload size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A deployment would need more memory than the platform has left for instances.
    #[error(
        "function {function}: needs {needed_mb} MB for its instances, but only {free_mb} MB of the platform's {capacity_mb} MB are free (functions.capacity_mb)"
    )]
    CapacityExceeded {
        /// The function being deployed.
        function: String,
        /// What it would reserve: `max_instances × memory_mb`.
        needed_mb: u64,
        /// What is left now.
        free_mb: u64,
        /// The platform's capacity.
        capacity_mb: u64,
    },
    /// A function of that name exists already (configured or deployed).
    #[error("function {0}: already exists")]
    AlreadyExists(String),
    /// The caller gave up on the invocation before it reached an instance.
    #[error("function {function}: invocation cancelled before it started")]
    Cancelled {
        /// The function.
        function: String,
    },
    /// Every instance is busy, no more may be started, and the queue in front is full.
    #[error("function {function}: queue full ({capacity} invocations waiting)")]
    QueueFull {
        /// The function.
        function: String,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The invocation ran past its deadline; when it was running, its instance was killed.
    #[error("function {function}: deadline of {} ms exceeded{}", deadline.as_millis(), if *instance_killed { " (instance killed)" } else { " while queued" })]
    Timeout {
        /// The function.
        function: String,
        /// The deadline the caller gave.
        deadline: Duration,
        /// Whether a running instance was killed (false: it was still waiting in the queue).
        instance_killed: bool,
    },
    /// The instance ran out of memory during the invocation and was replaced.
    #[error("function {function}: out of memory (limit {limit_mb} MB); instance replaced")]
    OutOfMemory {
        /// The function.
        function: String,
        /// The memory limit.
        limit_mb: u32,
    },
    /// The instance died during the invocation (other than by running out of memory).
    #[error("function {function}: instance {exit}; instance replaced")]
    InstanceDied {
        /// The function.
        function: String,
        /// How it ended.
        exit: InstanceExit,
    },
    /// An instance could not be started or never became ready.
    #[error("function {function}: instance failed to start: {reason}")]
    StartFailed {
        /// The function.
        function: String,
        /// What went wrong.
        reason: String,
    },
    /// The function answered with an error.
    #[error("function {function}: {failure:?}: {message}")]
    Function {
        /// The function.
        function: String,
        /// The kind of failure.
        failure: FunctionFailure,
        /// The handler's message.
        message: String,
    },
    /// The request to a remote function (HTTP backend) failed in transport.
    #[error("function {function}: transport error: {reason}")]
    Transport {
        /// The function.
        function: String,
        /// What went wrong.
        reason: String,
    },
    /// The platform is shutting down and takes no more invocations.
    #[error("the platform is shutting down")]
    ShuttingDown,
    /// `Platform::new` was called outside a Tokio runtime.
    #[error("the platform needs a Tokio runtime: call Platform::new inside one")]
    NoRuntime,
    /// An I/O operation of the platform itself failed.
    #[error("{context}: {source}")]
    Io {
        /// What the platform was doing.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// A short, closed-set label for metrics (`outcome`).
    pub fn outcome(&self) -> &'static str {
        match self {
            RuntimeError::ConfigFile { .. }
            | RuntimeError::InvalidConfig(_)
            | RuntimeError::InvalidFunctionName(_)
            | RuntimeError::PayloadTooLarge { .. }
            | RuntimeError::AlreadyExists(_)
            | RuntimeError::CapacityExceeded { .. } => "rejected",
            RuntimeError::Cancelled { .. } => "cancelled",
            RuntimeError::QueueFull { .. } => "queue_full",
            RuntimeError::Timeout { .. } => "timeout",
            RuntimeError::OutOfMemory { .. } => "out_of_memory",
            RuntimeError::InstanceDied { .. } => "instance_died",
            RuntimeError::StartFailed { .. } => "start_failed",
            RuntimeError::Function { .. } => "function_error",
            RuntimeError::Transport { .. } => "transport_error",
            RuntimeError::ShuttingDown | RuntimeError::NoRuntime => "shutting_down",
            RuntimeError::Io { .. } => "io_error",
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            context: context.into(),
            source,
        }
    }
}
