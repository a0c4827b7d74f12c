//! What the server says about itself and its models: server metadata, model metadata with its
//! tensors' names, datatypes and shapes (`-1` for a variable dimension), and the model
//! repository index.
//!
//! Their serde form is the REST JSON of the spec (and of Triton's model repository extension).
//!
//! ```
//! use cumulus_inference::protocol::{DataType, ModelMetadata, TensorMetadata};
//! let m = ModelMetadata {
//!     name: "add_one".into(),
//!     versions: vec!["1".into()],
//!     platform: "cumulus".into(),
//!     inputs: vec![TensorMetadata::new("x", DataType::Fp32, vec![-1, 4])],
//!     outputs: vec![TensorMetadata::new("y", DataType::Fp32, vec![-1, 4])],
//! };
//! let json = serde_json::to_value(&m).unwrap();
//! assert_eq!(json["inputs"][0]["datatype"], "FP32");
//! assert_eq!(json["inputs"][0]["shape"], serde_json::json!([-1, 4]));
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use super::datatype::DataType;

/// One input or output of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorMetadata {
    /// The tensor's name.
    pub name: String,
    /// Its element type.
    pub datatype: DataType,
    /// Its dimensions; `-1` matches any size (e.g. the batch dimension).
    pub shape: Vec<i64>,
}

impl TensorMetadata {
    /// Tensor metadata from its parts.
    pub fn new(name: impl Into<String>, datatype: DataType, shape: Vec<i64>) -> Self {
        TensorMetadata {
            name: name.into(),
            datatype,
            shape,
        }
    }
}

/// A model's metadata (`GET /v2/models/{m}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// The model's name.
    pub name: String,
    /// The versions that may be asked for explicitly (may be empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
    /// The framework or backend, informational only.
    pub platform: String,
    /// The inputs the model requires.
    pub inputs: Vec<TensorMetadata>,
    /// The outputs the model produces.
    pub outputs: Vec<TensorMetadata>,
}

impl ModelMetadata {
    /// The input named `name`.
    pub fn input(&self, name: &str) -> Option<&TensorMetadata> {
        self.inputs.iter().find(|t| t.name == name)
    }

    /// The output named `name`.
    pub fn output(&self, name: &str) -> Option<&TensorMetadata> {
        self.outputs.iter().find(|t| t.name == name)
    }
}

/// The server's metadata (`GET /v2`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerMetadata {
    /// The server's name.
    pub name: String,
    /// The server's version.
    pub version: String,
    /// The protocol extensions it implements, e.g. `"binary_tensor_data"`,
    /// `"model_repository"`: the backend names only what really works.
    pub extensions: Vec<String>,
}

/// Extension name: the binary tensor data extension of the REST binding.
pub const EXTENSION_BINARY_TENSOR_DATA: &str = "binary_tensor_data";
/// Extension name: the model repository extension (index, load, unload).
pub const EXTENSION_MODEL_REPOSITORY: &str = "model_repository";

/// The state of a model in the repository index, as Triton names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ModelState {
    /// Loaded and serving.
    Ready,
    /// Known but not loaded (or failed to load: see the entry's reason).
    Unavailable,
    /// Being loaded.
    Loading,
    /// Being unloaded.
    Unloading,
    /// Anything else.
    Unknown,
}

impl ModelState {
    /// The wire name (`"READY"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Ready => "READY",
            ModelState::Unavailable => "UNAVAILABLE",
            ModelState::Loading => "LOADING",
            ModelState::Unloading => "UNLOADING",
            ModelState::Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for ModelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the repository index (`POST /v2/repository/index`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryEntry {
    /// The model's name.
    pub name: String,
    /// The version this row is about, if versioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Its state.
    pub state: ModelState,
    /// Why it is in that state (empty when there is nothing to say).
    #[serde(default)]
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_entries_serialize_as_triton_does() {
        let e = RepositoryEntry {
            name: "m".into(),
            version: None,
            state: ModelState::Unavailable,
            reason: "unloaded".into(),
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"name": "m", "state": "UNAVAILABLE", "reason": "unloaded"})
        );
        for s in [
            ModelState::Ready,
            ModelState::Unavailable,
            ModelState::Loading,
            ModelState::Unloading,
            ModelState::Unknown,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
