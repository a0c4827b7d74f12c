//! The crate's one error type, [`ModelError`].
//!
//! Every variant names what was wrong and where: the config field, the layer, or the file and the
//! tensor of a checkpoint, so a caller can print it to a user unchanged.

use std::path::PathBuf;

/// Result alias used across `cumulus-models`.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// Errors of model construction, execution and model-folder I/O.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A config value is out of range; `field` is its serde path, e.g. `hidden[1]`.
    #[error("invalid model config: field `{field}`: {reason}")]
    Config { field: String, reason: String },

    /// A model (or batch) larger than a ceiling, refused before anything is allocated.
    #[error("{what} needs {size} {unit}, over the limit of {limit} {unit} ({detail})")]
    TooLarge {
        /// What was too large (`mlp model`, `batch`).
        what: String,
        size: u64,
        limit: u64,
        /// `parameters`, `examples`, `bytes`.
        unit: &'static str,
        /// The size in other terms, and what to do.
        detail: String,
    },

    /// `default_for` or a config file named an architecture this crate does not have.
    #[error(
        "unknown architecture `{0}` (known: logreg, sparse_logreg, mlp, lenet, resnet, pmf, transformer)"
    )]
    UnknownArchitecture(String),

    /// An input does not fit a layer: wrong rank, size, dtype or id range.
    #[error("layer `{layer}`: bad input: {reason}")]
    Input { layer: String, reason: String },

    /// A layer range outside the model or reversed.
    #[error("bad layer range [{first}, {last}] for a model with {len} layers")]
    LayerRange {
        first: usize,
        last: usize,
        len: usize,
    },

    /// A checkpoint (safetensors) file that cannot be used, naming the file and the tensor
    /// (`tensor` is `None` only when the file header itself is unreadable).
    #[error("{}: {}{reason}", file.display(), tensor.as_ref().map(|t| format!("tensor `{t}`: ")).unwrap_or_else(|| "header: ".to_string()))]
    Checkpoint {
        file: PathBuf,
        tensor: Option<String>,
        reason: String,
    },

    /// A model folder's `config.json` that is missing, malformed or inconsistent.
    #[error("{}: {reason}", file.display())]
    ConfigFile { file: PathBuf, reason: String },

    /// A filesystem operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A parameter name that the model does not have.
    #[error("unknown parameter `{0}`")]
    UnknownParameter(String),

    /// An optimizer config value out of range.
    #[error("invalid optimizer config: field `{field}`: {reason}")]
    Optimizer { field: String, reason: String },

    /// Training inputs that do not fit together (lengths, batch size, labels).
    #[error("training: {0}")]
    Training(String),

    /// A dataset could not be read or converted (see [`DataError`](crate::data::DataError)).
    #[error(transparent)]
    Data(#[from] crate::data::DataError),

    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    /// Shorthand for [`ModelError::Config`].
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`ModelError::Input`].
    pub fn input(layer: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Input {
            layer: layer.into(),
            reason: reason.into(),
        }
    }
}
