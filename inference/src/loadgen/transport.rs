//! The three ways a request reaches a KServe V2 server, each answer checked minimally (status
//! 200 / OK and at least one output tensor):
//!
//! - [`Transport::RestJson`]: `POST {url}/v2/models/{m}/infer` with the FP32 data inline as a flat
//!   JSON array next to its shape;
//! - [`Transport::RestBinary`]: the same route with the binary tensor data extension: the JSON
//!   header (input `parameters.binary_data_size`, outputs asked for with `binary_data: true`)
//!   followed by the raw little-endian floats, `Inference-Header-Content-Length` giving the header's
//!   length;
//! - [`Transport::Grpc`]: `inference.GRPCInferenceService/ModelInfer` with the tensor in
//!   `raw_input_contents`.
//!
//! Payloads are built once before the run (a few distinct seeded tensors used in turn), so the
//! generator spends its time sending, not encoding.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use cumulus_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use cumulus_proto::inference::model_infer_request::InferInputTensor;
use cumulus_proto::inference::{ModelInferRequest, ModelInferResponse};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tonic::transport::Channel;

use super::error::{LoadgenError, Result};

/// How requests are encoded and sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    RestJson,
    RestBinary,
    Grpc,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RestJson => "rest-json",
            Self::RestBinary => "rest-binary",
            Self::Grpc => "grpc",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Transport {
    type Err = LoadgenError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rest-json" | "rest" | "json" => Ok(Self::RestJson),
            "rest-binary" | "binary" => Ok(Self::RestBinary),
            "grpc" => Ok(Self::Grpc),
            other => Err(LoadgenError::Spec(format!(
                "transport `{other}`: expected rest-json, rest-binary or grpc"
            ))),
        }
    }
}

/// What is sent: one FP32 input tensor of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// Model name in the route / `model_name`.
    pub model: String,
    /// Model version (`/versions/{v}` in the route), if any.
    #[serde(default)]
    pub version: Option<String>,
    /// Input tensor name (`input` for Cumulus models).
    pub input: String,
    /// Output tensor to ask for; `None` asks for every output (binary outputs through the
    /// request-level `binary_data_output`).
    #[serde(default)]
    pub output: Option<String>,
    /// Input shape, batch dimension included, e.g. `[1, 784]`.
    pub shape: Vec<i64>,
    /// Seed of the values (uniform in [0, 1), as pixels).
    #[serde(default)]
    pub seed: u64,
    /// Distinct tensors, sent round-robin.
    #[serde(default = "default_variants")]
    pub variants: usize,
}

fn default_variants() -> usize {
    8
}

/// Largest tensor the generator builds (elements), 64 Mi floats.
const MAX_ELEMENTS: i64 = 1 << 26;

impl Payload {
    /// A payload for `model`'s `input` of `shape`, seed 0, 8 variants.
    pub fn new(model: &str, input: &str, shape: &[i64]) -> Self {
        Self {
            model: model.to_string(),
            version: None,
            input: input.to_string(),
            output: None,
            shape: shape.to_vec(),
            seed: 0,
            variants: default_variants(),
        }
    }

    /// The element count, after checking the shape and the other fields.
    pub fn validate(&self) -> Result<usize> {
        if self.model.is_empty() || self.input.is_empty() {
            return Err(LoadgenError::Spec(
                "payload.model and payload.input must not be empty".to_string(),
            ));
        }
        if self.variants == 0 {
            return Err(LoadgenError::Spec(
                "payload.variants must be at least 1".to_string(),
            ));
        }
        let mut n: i64 = 1;
        for &d in &self.shape {
            if d <= 0 {
                return Err(LoadgenError::Spec(format!(
                    "payload.shape {:?}: every dimension must be > 0",
                    self.shape
                )));
            }
            n = n.saturating_mul(d);
        }
        if self.shape.is_empty() || n > MAX_ELEMENTS {
            return Err(LoadgenError::Spec(format!(
                "payload.shape {:?}: 1 to {MAX_ELEMENTS} elements",
                self.shape
            )));
        }
        Ok(n as usize)
    }

    /// The `variants` seeded tensors.
    pub fn tensors(&self) -> Result<Vec<Vec<f32>>> {
        let n = self.validate()?;
        let mut rng = StdRng::seed_from_u64(self.seed);
        Ok((0..self.variants)
            .map(|_| (0..n).map(|_| rng.random::<f32>()).collect())
            .collect())
    }

    fn route(&self, base: &str) -> String {
        let base = base.trim_end_matches('/');
        match &self.version {
            Some(v) => format!("{base}/v2/models/{}/versions/{v}/infer", self.model),
            None => format!("{base}/v2/models/{}/infer", self.model),
        }
    }

    /// The REST JSON body of one tensor.
    pub fn json_body(&self, data: &[f32]) -> Vec<u8> {
        let mut body = json!({
            "inputs": [{
                "name": self.input,
                "shape": self.shape,
                "datatype": "FP32",
                "data": data,
            }]
        });
        if let Some(out) = &self.output {
            body["outputs"] = json!([{ "name": out }]);
        }
        serde_json::to_vec(&body).expect("a JSON value always serializes")
    }

    /// The binary-extension body of one tensor and the length of its JSON header.
    pub fn binary_body(&self, data: &[f32]) -> (Vec<u8>, usize) {
        let mut header = json!({
            "inputs": [{
                "name": self.input,
                "shape": self.shape,
                "datatype": "FP32",
                "parameters": { "binary_data_size": data.len() * 4 },
            }]
        });
        match &self.output {
            Some(out) => {
                header["outputs"] = json!([{ "name": out, "parameters": { "binary_data": true } }])
            }
            None => header["parameters"] = json!({ "binary_data_output": true }),
        }
        let mut body = serde_json::to_vec(&header).expect("a JSON value always serializes");
        let header_len = body.len();
        body.reserve(data.len() * 4);
        for v in data {
            body.extend_from_slice(&v.to_le_bytes());
        }
        (body, header_len)
    }

    /// The gRPC request of one tensor.
    pub fn grpc_request(&self, data: &[f32]) -> ModelInferRequest {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        ModelInferRequest {
            model_name: self.model.clone(),
            model_version: self.version.clone().unwrap_or_default(),
            inputs: vec![InferInputTensor {
                name: self.input.clone(),
                datatype: "FP32".to_string(),
                shape: self.shape.clone(),
                ..Default::default()
            }],
            outputs: self
                .output
                .iter()
                .map(|name| {
                    cumulus_proto::inference::model_infer_request::InferRequestedOutputTensor {
                        name: name.clone(),
                        ..Default::default()
                    }
                })
                .collect(),
            raw_input_contents: vec![raw],
            ..Default::default()
        }
    }
}

/// Why one request failed. [`Failure::key`] is its label in the result's error counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A non-200 HTTP status.
    Http(u16),
    /// A gRPC status other than OK.
    Grpc(tonic::Code),
    /// No answer within the request timeout.
    Timeout,
    /// The connection could not be made.
    Connect,
    /// The connection broke, or the body could not be read.
    Transport,
    /// 200 / OK, but the answer is not an inference response with an output.
    InvalidResponse,
    /// Not sent: the in-flight limit was reached at its scheduled time.
    Dropped,
}

impl Failure {
    /// The label in [`ErrorCounts`](super::ErrorCounts): `http_429`, `grpc_ResourceExhausted`,
    /// `timeout`, ...
    pub fn key(&self) -> String {
        match self {
            Self::Http(code) => format!("http_{code}"),
            Self::Grpc(code) => format!("grpc_{code:?}"),
            Self::Timeout => "timeout".to_string(),
            Self::Connect => "connect".to_string(),
            Self::Transport => "transport".to_string(),
            Self::InvalidResponse => "invalid_response".to_string(),
            Self::Dropped => "dropped".to_string(),
        }
    }

    /// The server said it is overloaded: 429 or `RESOURCE_EXHAUSTED`.
    pub fn is_overload(&self) -> bool {
        matches!(
            self,
            Self::Http(429) | Self::Grpc(tonic::Code::ResourceExhausted)
        )
    }

    fn from_reqwest(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::Timeout
        } else if e.is_connect() {
            Self::Connect
        } else {
            Self::Transport
        }
    }
}

#[derive(Deserialize)]
struct ResponseOutputs {
    outputs: Vec<ResponseOutput>,
}

#[derive(Deserialize)]
struct ResponseOutput {
    #[serde(default)]
    parameters: Option<OutputParameters>,
}

#[derive(Deserialize)]
struct OutputParameters {
    #[serde(default)]
    binary_data_size: Option<u64>,
}

/// Whether a 200 body is a V2 inference response with an output; for the binary extension
/// (`header_len` given) the binary outputs must also all be there.
fn valid_rest_body(body: &[u8], header_len: Option<usize>) -> bool {
    let json = match header_len {
        Some(n) if n <= body.len() => &body[..n],
        Some(_) => return false,
        None => body,
    };
    let Ok(parsed) = serde_json::from_slice::<ResponseOutputs>(json) else {
        return false;
    };
    let binary: u64 = parsed
        .outputs
        .iter()
        .filter_map(|o| o.parameters.as_ref()?.binary_data_size)
        .sum();
    !parsed.outputs.is_empty() && (json.len() as u64).saturating_add(binary) <= body.len() as u64
}

fn valid_grpc_response(r: &ModelInferResponse) -> bool {
    !r.outputs.is_empty()
}

/// A connected client holding the prepared payloads.
#[derive(Clone)]
pub(crate) enum Client {
    Rest {
        http: reqwest::Client,
        route: String,
        /// Body and, for the binary extension, its JSON header length.
        bodies: Vec<(Bytes, Option<usize>)>,
    },
    Grpc {
        client: GrpcInferenceServiceClient<Channel>,
        requests: Vec<ModelInferRequest>,
    },
}

impl Client {
    /// Build the payloads and connect (gRPC connects now; REST connects lazily, pooled).
    pub(crate) async fn connect(
        url: &str,
        transport: Transport,
        payload: &Payload,
        pool_size: usize,
    ) -> Result<Self> {
        let tensors = payload.tensors()?;
        let bad_url = |reason: String| LoadgenError::Connect {
            url: url.to_string(),
            reason,
        };
        match transport {
            Transport::RestJson | Transport::RestBinary => {
                reqwest::Url::parse(url).map_err(|e| bad_url(e.to_string()))?;
                let http = reqwest::Client::builder()
                    .tcp_nodelay(true)
                    .pool_max_idle_per_host(pool_size)
                    .build()
                    .map_err(|e| bad_url(e.to_string()))?;
                let bodies = tensors
                    .iter()
                    .map(|t| match transport {
                        Transport::RestBinary => {
                            let (body, header_len) = payload.binary_body(t);
                            (Bytes::from(body), Some(header_len))
                        }
                        _ => (Bytes::from(payload.json_body(t)), None),
                    })
                    .collect();
                Ok(Self::Rest {
                    http,
                    route: payload.route(url),
                    bodies,
                })
            }
            Transport::Grpc => {
                let channel = Channel::from_shared(url.to_string())
                    .map_err(|e| bad_url(e.to_string()))?
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .map_err(|e| bad_url(e.to_string()))?;
                Ok(Self::Grpc {
                    client: GrpcInferenceServiceClient::new(channel)
                        .max_decoding_message_size(64 << 20),
                    requests: tensors.iter().map(|t| payload.grpc_request(t)).collect(),
                })
            }
        }
    }

    /// Send request number `i` (its payload is variant `i mod variants`) and check the answer.
    pub(crate) async fn send(&self, i: usize) -> std::result::Result<(), Failure> {
        match self {
            Self::Rest {
                http,
                route,
                bodies,
            } => {
                let (body, header_len) = &bodies[i % bodies.len()];
                let mut req = http.post(route.as_str()).body(body.clone());
                req = match header_len {
                    Some(n) => req
                        .header("content-type", "application/octet-stream")
                        .header("inference-header-content-length", n.to_string()),
                    None => req.header("content-type", "application/json"),
                };
                let resp = req.send().await.map_err(|e| Failure::from_reqwest(&e))?;
                let status = resp.status().as_u16();
                let answer_header_len = resp
                    .headers()
                    .get("inference-header-content-length")
                    .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
                let bytes = resp.bytes().await.map_err(|e| Failure::from_reqwest(&e))?;
                if status != 200 {
                    return Err(Failure::Http(status));
                }
                if valid_rest_body(&bytes, answer_header_len) {
                    Ok(())
                } else {
                    Err(Failure::InvalidResponse)
                }
            }
            Self::Grpc { client, requests } => {
                let req = requests[i % requests.len()].clone();
                let resp = client
                    .clone()
                    .model_infer(req)
                    .await
                    .map_err(|s| Failure::Grpc(s.code()))?;
                if valid_grpc_response(resp.get_ref()) {
                    Ok(())
                } else {
                    Err(Failure::InvalidResponse)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> Payload {
        Payload {
            output: Some("output".to_string()),
            ..Payload::new("mlp", "input", &[1, 4])
        }
    }

    #[test]
    fn tensors_are_seeded_and_validated() {
        let p = payload();
        let a = p.tensors().unwrap();
        assert_eq!(a.len(), 8);
        assert!(a.iter().all(|t| t.len() == 4));
        assert_eq!(a, p.tensors().unwrap());
        assert_ne!(a[0], a[1]);
        for shape in [vec![], vec![1, 0], vec![1 << 20, 1 << 20]] {
            let err = Payload::new("m", "i", &shape).validate().unwrap_err();
            assert!(err.to_string().contains("payload.shape"), "{err}");
        }
    }

    #[test]
    fn the_json_body_is_a_v2_request() {
        let p = payload();
        let body: serde_json::Value =
            serde_json::from_slice(&p.json_body(&[0.5, 1.0, 2.0, 3.0])).unwrap();
        assert_eq!(
            body,
            json!({
                "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                            "data": [0.5, 1.0, 2.0, 3.0]}],
                "outputs": [{"name": "output"}]
            })
        );
        assert_eq!(
            p.route("http://h:1/"),
            "http://h:1/v2/models/mlp/infer".to_string()
        );
    }

    #[test]
    fn the_binary_body_is_header_then_little_endian_floats() {
        let p = payload();
        let (body, n) = p.binary_body(&[1.0, -2.0, 0.25, 8.0]);
        let header: serde_json::Value = serde_json::from_slice(&body[..n]).unwrap();
        assert_eq!(header["inputs"][0]["parameters"]["binary_data_size"], 16);
        assert_eq!(header["outputs"][0]["parameters"]["binary_data"], true);
        assert_eq!(body.len(), n + 16);
        assert_eq!(&body[n + 4..n + 8], &(-2.0f32).to_le_bytes());
        let all = Payload::new("m", "i", &[2]);
        let (body, n) = all.binary_body(&[1.0, 2.0]);
        let header: serde_json::Value = serde_json::from_slice(&body[..n]).unwrap();
        assert_eq!(header["parameters"]["binary_data_output"], true);
    }

    #[test]
    fn the_grpc_request_carries_raw_contents() {
        let r = payload().grpc_request(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(r.model_name, "mlp");
        assert_eq!(r.inputs[0].shape, vec![1, 4]);
        assert_eq!(r.raw_input_contents[0].len(), 16);
        assert_eq!(r.outputs[0].name, "output");
    }

    #[test]
    fn answers_are_checked() {
        assert!(valid_rest_body(
            br#"{"outputs":[{"name":"o","data":[1]}]}"#,
            None
        ));
        assert!(!valid_rest_body(br#"{"outputs":[]}"#, None));
        assert!(!valid_rest_body(br#"{"error":"x"}"#, None));
        let header = br#"{"outputs":[{"name":"o","parameters":{"binary_data_size":8}}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&[0; 8]);
        assert!(valid_rest_body(&body, Some(header.len())));
        assert!(!valid_rest_body(
            &body[..body.len() - 1],
            Some(header.len())
        ));
        assert!(!valid_rest_body(&body, Some(body.len() + 1)));
    }

    #[test]
    fn failures_have_stable_keys() {
        assert_eq!(Failure::Http(429).key(), "http_429");
        assert!(Failure::Http(429).is_overload());
        assert!(Failure::Grpc(tonic::Code::ResourceExhausted).is_overload());
        assert_eq!(
            Failure::Grpc(tonic::Code::Unavailable).key(),
            "grpc_Unavailable"
        );
        assert!(!Failure::Timeout.is_overload());
        assert_eq!("grpc".parse::<Transport>().unwrap(), Transport::Grpc);
        assert!("udp".parse::<Transport>().is_err());
    }
}
