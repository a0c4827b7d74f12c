//! [`StoreError`]: every way a parameter-store request or a shard can fail.
//!
//! The one mapping to `tonic::Status` lives in [`crate::grpc`]; this module knows no transport.

/// An error of the parameter store (server and client side).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The job id is not registered on this shard.
    #[error("unknown job '{0}'")]
    UnknownJob(String),
    /// The job has no tensor of this name.
    #[error("job '{job}': unknown tensor '{tensor}'")]
    UnknownTensor {
        /// Job id.
        job: String,
        /// Tensor name as sent.
        tensor: String,
    },
    /// A request that is malformed: index out of range, length mismatch, non-finite value, …
    #[error("{0}")]
    InvalidArgument(String),
    /// The job id is already registered with a different layout.
    #[error("job '{0}' is already registered with a different layout")]
    LayoutConflict(String),
    /// The job id is already registered and the request did not ask to resume it.
    #[error(
        "job '{job}' is already registered on this shard and holds {pushes} pushes: resume it to continue it, or unregister it to start over under this id"
    )]
    JobExists {
        /// Job id.
        job: String,
        /// Pushes the job holds.
        pushes: u64,
    },
    /// A registration larger than a configured limit (it can never be held as configured).
    #[error("{what} has {size} {unit}, over the limit of {limit} {unit} ({setting})")]
    LimitExceeded {
        /// What was too large: `job 'j' tensor 'w'`.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
        /// `elements`, `chunks`.
        unit: &'static str,
        /// The setting (CLI flag) that sets the limit, or what to change.
        setting: &'static str,
    },
    /// A registration that does not fit in what the shard may still hold.
    #[error(
        "job '{job}' needs about {needed} bytes on shard {shard}, which holds {held} bytes of its limit of {limit} bytes (--max-shard-bytes); unregister finished jobs or add shards"
    )]
    ShardFull {
        /// Job id.
        job: String,
        /// Shard index.
        shard: u32,
        /// Estimated bytes the job needs on this shard.
        needed: u64,
        /// Estimated bytes the shard's jobs hold.
        held: u64,
        /// The limit.
        limit: u64,
    },
    /// A message (or a tensor) larger than the configured limit.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: String,
        /// Its size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// A wait for the synchronization clock ran past its limit.
    #[error(
        "job '{job}': worker {worker} waited {waited_ms} ms for clock {clock} (slowest worker at {min_clock})"
    )]
    ClockTimeout {
        /// Job id.
        job: String,
        /// The waiting worker.
        worker: u32,
        /// The clock it waited for.
        clock: u64,
        /// The slowest worker's clock when the wait ended.
        min_clock: u64,
        /// How long it waited.
        waited_ms: u64,
    },
    /// The job was asked to stop; a wait for its clock ended without running on.
    #[error("job '{0}' is stopping")]
    JobStopping(String),
    /// The snapshot id does not name a complete snapshot.
    #[error("snapshot '{0}' not found or incomplete")]
    UnknownSnapshot(String),
    /// A queue in front of the shard is full.
    #[error("{0} queue is full")]
    Overloaded(&'static str),
    /// The shard is shutting down.
    #[error("shard is shutting down")]
    ShuttingDown,
    /// A shard could not be reached (client side, after retries).
    #[error("shard {shard} ({addr}) unavailable: {reason}")]
    ShardUnavailable {
        /// Shard index.
        shard: usize,
        /// Its address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A shard answered with an error status (client side).
    #[error("shard {shard}: {status}")]
    Remote {
        /// Shard index.
        shard: usize,
        /// The status it answered.
        status: tonic::Status,
    },
    /// The shard addresses given to the client do not match the shards' own identities.
    #[error("shard configuration mismatch: {0}")]
    ShardMismatch(String),
    /// The write-ahead log or data directory failed.
    #[error("write-ahead log: {0}")]
    Wal(#[source] std::io::Error),
    /// The write-ahead log holds a record that cannot be read.
    #[error("write-ahead log {path}: corrupt record at byte {offset}: {reason}")]
    CorruptWal {
        /// Segment file.
        path: String,
        /// Byte offset of the record.
        offset: u64,
        /// Why it is unreadable.
        reason: String,
    },
    /// Start-up cannot use what it found (a logged registration over the limits, a record that
    /// does not apply); `what` names the record or the snapshot.
    #[error("{what}: {reason}")]
    Recovery {
        /// The record (`write-ahead log FILE (byte N)`) or the snapshot.
        what: String,
        /// Why, and what to do.
        reason: String,
    },
    /// The object store failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// A snapshot in the object store is unreadable.
    #[error("snapshot '{id}': {reason}")]
    CorruptSnapshot {
        /// Snapshot id.
        id: String,
        /// Why.
        reason: String,
    },
    /// Binding or serving the network endpoint failed.
    #[error("transport: {0}")]
    Transport(String),
    /// Any other I/O failure (listening socket, metrics endpoint, redis peer).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    /// Shorthand for [`StoreError::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }

    /// Whether this says the job is stopping (on the shard, or as a shard's answer): a worker
    /// then pushes what it holds and returns instead of waiting for a clock.
    pub fn is_job_stopping(&self) -> bool {
        match self {
            Self::JobStopping(_) => true,
            Self::Remote { status, .. } => status.code() == tonic::Code::Aborted,
            _ => false,
        }
    }

    /// Whether a shard answered that the job id is already registered (a different layout, or
    /// a job that holds pushes): the caller resumes it or picks another id.
    pub fn is_already_registered(&self) -> bool {
        match self {
            Self::JobExists { .. } | Self::LayoutConflict(_) => true,
            Self::Remote { status, .. } => status.code() == tonic::Code::AlreadyExists,
            _ => false,
        }
    }
}

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
