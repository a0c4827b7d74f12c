//! A fake inference backend for the front-end tests and for `examples/fake_kserve_server.rs`
//! (which includes this file by path), so `tests/tritonclient/check.py` can be run against a real
//! server before the core exists.
//!
//! Models:
//! - `add_one` (version "1"): FP32 `INPUT0` `[-1, 4]` → `OUTPUT0` = input + 1, and `OUTPUT1` =
//!   input (both FP32 `[-1, 4]`); echoes the request's parameters (except `binary_data_output`)
//!   in the response's;
//! - `identity_<type>` for every datatype (`identity_fp16`, `identity_bytes`, ...): `INPUT0`
//!   `[-1, -1]` → `OUTPUT0`, the same;
//! - `multi`: INT32 `A` `[-1, 2]`, BYTES `B` `[-1]`, FP16 `C` `[-1, 2]`, BOOL `D` `[-1]` →
//!   `A_OUT`, `B_OUT`, `C_OUT`, `D_OUT`, the same;
//! - `busy`: refuses with `Overloaded` (retry after 1.5 s); `broken`: fails with `Internal`;
//! - `sleepy`: known but not loaded until `load`.
//!
//! Every model but `sleepy` starts loaded; `unload`/`load` move any of them.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cumulus_inference::protocol::{
    BINARY_DATA_OUTPUT, BoxFuture, DataType, EXTENSION_BINARY_TENSOR_DATA,
    EXTENSION_MODEL_REPOSITORY, InferBackend, InferError, InferRequest, InferResponse, Limits,
    ModelMetadata, ModelState, RepositoryEntry, ServerMetadata, Tensor, TensorData, TensorMetadata,
    check_version_known, validate_request,
};

/// The fake backend; see the module docs for its models.
pub struct FakeBackend {
    limits: Limits,
    ready: AtomicBool,
    loaded: Mutex<BTreeSet<String>>,
}

fn identity_name(t: DataType) -> String {
    format!("identity_{}", t.as_str().to_lowercase())
}

/// Every model name the fake knows.
pub fn model_names() -> Vec<String> {
    let mut names: Vec<String> = ["add_one", "multi", "busy", "broken", "sleepy"]
        .into_iter()
        .map(String::from)
        .collect();
    names.extend(DataType::ALL.into_iter().map(identity_name));
    names
}

fn meta(name: &str, inputs: Vec<TensorMetadata>, outputs: Vec<TensorMetadata>) -> ModelMetadata {
    ModelMetadata {
        name: name.into(),
        versions: vec!["1".into()],
        platform: "fake".into(),
        inputs,
        outputs,
    }
}

fn metadata_of(name: &str) -> Option<ModelMetadata> {
    let t = TensorMetadata::new;
    Some(match name {
        "add_one" | "busy" | "broken" | "sleepy" => meta(
            name,
            vec![t("INPUT0", DataType::Fp32, vec![-1, 4])],
            vec![
                t("OUTPUT0", DataType::Fp32, vec![-1, 4]),
                t("OUTPUT1", DataType::Fp32, vec![-1, 4]),
            ],
        ),
        "multi" => meta(
            name,
            vec![
                t("A", DataType::Int32, vec![-1, 2]),
                t("B", DataType::Bytes, vec![-1]),
                t("C", DataType::Fp16, vec![-1, 2]),
                t("D", DataType::Bool, vec![-1]),
            ],
            vec![
                t("A_OUT", DataType::Int32, vec![-1, 2]),
                t("B_OUT", DataType::Bytes, vec![-1]),
                t("C_OUT", DataType::Fp16, vec![-1, 2]),
                t("D_OUT", DataType::Bool, vec![-1]),
            ],
        ),
        _ => {
            let datatype = DataType::ALL
                .into_iter()
                .find(|&d| identity_name(d) == name)?;
            meta(
                name,
                vec![t("INPUT0", datatype, vec![-1, -1])],
                vec![t("OUTPUT0", datatype, vec![-1, -1])],
            )
        }
    })
}

impl FakeBackend {
    /// A ready fake with `limits`.
    pub fn new(limits: Limits) -> Self {
        let loaded = model_names()
            .into_iter()
            .filter(|n| n != "sleepy")
            .collect();
        FakeBackend {
            limits,
            ready: AtomicBool::new(true),
            loaded: Mutex::new(loaded),
        }
    }

    /// Makes `/v2/health/ready` say yes or no.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    fn is_loaded(&self, name: &str) -> bool {
        self.loaded
            .lock()
            .expect("no test panics while holding the lock")
            .contains(name)
    }

    fn run(
        &self,
        meta: &ModelMetadata,
        request: InferRequest,
    ) -> Result<InferResponse, InferError> {
        let name = meta.name.as_str();
        match name {
            "busy" => {
                return Err(InferError::Overloaded {
                    retry_after: Duration::from_millis(1500),
                    reason: "model 'busy' is overloaded: its queue is full".into(),
                });
            }
            "broken" => {
                return Err(InferError::Internal(
                    "secret detail: the GPU caught fire".into(),
                ));
            }
            _ => {}
        }
        let request = validate_request(meta, &self.limits, request)?;
        let mut parameters = request.parameters.clone();
        parameters.remove(BINARY_DATA_OUTPUT);
        let outputs = match name {
            "add_one" | "sleepy" => {
                let x = &request.inputs[0];
                let TensorData::F32(v) = &x.data else {
                    return Err(InferError::Internal(
                        "validation left a non-FP32 input".into(),
                    ));
                };
                let plus = v.iter().map(|a| a + 1.0).collect();
                vec![
                    Tensor::new("OUTPUT0", x.shape.clone(), TensorData::F32(plus))?,
                    Tensor::new("OUTPUT1", x.shape.clone(), x.data.clone())?,
                ]
            }
            _ => request
                .inputs
                .into_iter()
                .zip(&meta.outputs)
                .map(|(t, out)| Tensor::new(out.name.clone(), t.shape, t.data))
                .collect::<Result<_, _>>()?,
        };
        Ok(InferResponse {
            model_name: name.into(),
            model_version: Some("1".into()),
            // Left out on purpose: the front end echoes the request id.
            id: None,
            parameters,
            outputs,
        })
    }
}

impl InferBackend for FakeBackend {
    fn server_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn server_metadata(&self) -> ServerMetadata {
        ServerMetadata {
            name: "cumulus-fake".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec![
                EXTENSION_BINARY_TENSOR_DATA.into(),
                EXTENSION_MODEL_REPOSITORY.into(),
            ],
        }
    }

    fn model_metadata(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<ModelMetadata, InferError> {
        let meta = metadata_of(name).ok_or_else(|| InferError::unknown_model(name, version))?;
        check_version_known(&meta, version)?;
        Ok(meta)
    }

    fn model_ready(&self, name: &str, version: Option<&str>) -> Result<bool, InferError> {
        self.model_metadata(name, version)?;
        Ok(self.is_loaded(name))
    }

    fn infer(
        &self,
        name: &str,
        version: Option<&str>,
        request: InferRequest,
    ) -> BoxFuture<'_, Result<InferResponse, InferError>> {
        let result = self.model_metadata(name, version).and_then(|meta| {
            if !self.is_loaded(name) {
                return Err(InferError::not_ready(name));
            }
            self.run(&meta, request)
        });
        Box::pin(async move { result })
    }

    fn repository_index(&self, ready_only: bool) -> Vec<RepositoryEntry> {
        model_names()
            .into_iter()
            .map(|name| {
                let ready = self.is_loaded(&name);
                RepositoryEntry {
                    state: if ready {
                        ModelState::Ready
                    } else {
                        ModelState::Unavailable
                    },
                    reason: if ready {
                        String::new()
                    } else {
                        "unloaded".into()
                    },
                    version: Some("1".into()),
                    name,
                }
            })
            .filter(|e| !ready_only || e.state == ModelState::Ready)
            .collect()
    }

    fn load(&self, name: &str) -> BoxFuture<'_, Result<(), InferError>> {
        let result = match metadata_of(name) {
            None => Err(InferError::unknown_model(name, None)),
            Some(_) => {
                self.loaded
                    .lock()
                    .expect("no test panics while holding the lock")
                    .insert(name.to_owned());
                Ok(())
            }
        };
        Box::pin(async move { result })
    }

    fn unload(&self, name: &str) -> BoxFuture<'_, Result<(), InferError>> {
        let result = match metadata_of(name) {
            None => Err(InferError::unknown_model(name, None)),
            Some(_) => {
                self.loaded
                    .lock()
                    .expect("no test panics while holding the lock")
                    .remove(name);
                Ok(())
            }
        };
        Box::pin(async move { result })
    }

    fn limits(&self) -> &Limits {
        &self.limits
    }
}
