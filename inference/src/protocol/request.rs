//! Inference requests and responses, the same for REST and gRPC.
//!
//! ```
//! use cumulus_inference::protocol::{InferRequest, ParameterValue, RequestedOutput};
//! let mut request = InferRequest::default();
//! request.parameters.insert("binary_data_output", ParameterValue::Bool(true));
//! request.outputs.push(RequestedOutput::new("y"));
//! assert!(request.output_wants_binary("y")); // from the request-wide parameter
//! request.outputs[0].parameters.insert("binary_data", ParameterValue::Bool(false));
//! assert!(!request.output_wants_binary("y")); // the output's own parameter wins
//! ```

use super::tensor::{Parameters, Tensor};

/// The binary-extension parameter of a requested output: `true` asks for it as raw bytes.
pub const BINARY_DATA: &str = "binary_data";
/// The binary-extension parameter of a request: the default of [`BINARY_DATA`] for its outputs.
pub const BINARY_DATA_OUTPUT: &str = "binary_data_output";
/// The binary-extension parameter of an input or output: the byte size of its binary data.
pub const BINARY_DATA_SIZE: &str = "binary_data_size";

/// An output the client asks for by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestedOutput {
    /// The output's name.
    pub name: String,
    /// Its parameters (`binary_data`, or anything else, passed through).
    pub parameters: Parameters,
}

impl RequestedOutput {
    /// A requested output without parameters.
    pub fn new(name: impl Into<String>) -> Self {
        RequestedOutput {
            name: name.into(),
            parameters: Parameters::new(),
        }
    }
}

/// One inference request, decoded from either transport.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InferRequest {
    /// The client's request id, echoed in the response.
    pub id: Option<String>,
    /// Request parameters, passed through (`binary_data_output` included).
    pub parameters: Parameters,
    /// The input tensors, in the client's order until [`validate_request`](super::validate_request)
    /// puts them in the model's order.
    pub inputs: Vec<Tensor>,
    /// The outputs asked for; empty means all of the model's outputs.
    pub outputs: Vec<RequestedOutput>,
}

impl InferRequest {
    /// The input named `name`.
    pub fn input(&self, name: &str) -> Option<&Tensor> {
        self.inputs.iter().find(|t| t.name == name)
    }

    /// The requested output named `name`.
    pub fn requested_output(&self, name: &str) -> Option<&RequestedOutput> {
        self.outputs.iter().find(|o| o.name == name)
    }

    /// Whether the output `name` is wanted in the response: every output is when none is
    /// named.
    pub fn wants_output(&self, name: &str) -> bool {
        self.outputs.is_empty() || self.requested_output(name).is_some()
    }

    /// Whether the output `name` should be sent as binary data (REST only; gRPC always sends
    /// raw contents): its own `binary_data` parameter if given, else the request's
    /// `binary_data_output`, else no. Decoders have already refused non-boolean values of both.
    pub fn output_wants_binary(&self, name: &str) -> bool {
        self.requested_output(name)
            .and_then(|o| o.parameters.get(BINARY_DATA))
            .or_else(|| self.parameters.get(BINARY_DATA_OUTPUT))
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }
}

/// One inference response, encoded into either transport.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InferResponse {
    /// The model that answered.
    pub model_name: String,
    /// Its version, if the model is versioned.
    pub model_version: Option<String>,
    /// The request's id, if it had one.
    pub id: Option<String>,
    /// Response parameters, passed through.
    pub parameters: Parameters,
    /// The output tensors. The front ends keep only the requested ones, in the requested order,
    /// so a backend may return all of its outputs.
    pub outputs: Vec<Tensor>,
}

impl InferResponse {
    /// Keeps the outputs `request` asks for, in its order (all, in the backend's order, when it
    /// names none), and fills in the request id when the backend left it out. `Err` names a
    /// requested output the backend did not produce: a bug of the backend, not of the client.
    pub fn select_outputs(
        mut self,
        request_id: Option<&str>,
        requested: &[RequestedOutput],
    ) -> Result<Self, String> {
        if self.id.is_none() {
            self.id = request_id.map(str::to_owned);
        }
        if requested.is_empty() {
            return Ok(self);
        }
        let mut produced: Vec<Option<Tensor>> = self.outputs.into_iter().map(Some).collect();
        let mut selected = Vec::with_capacity(requested.len());
        for want in requested {
            let slot = produced
                .iter_mut()
                .find(|t| t.as_ref().is_some_and(|t| t.name == want.name));
            match slot.and_then(Option::take) {
                Some(t) => selected.push(t),
                None => {
                    return Err(format!(
                        "the backend did not produce the requested output '{}'",
                        want.name
                    ));
                }
            }
        }
        self.outputs = selected;
        Ok(self)
    }
}

/// What the front end must remember of a request to shape its response, taken before the
/// request moves into the backend: the id, the requested outputs and their binary choices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutputSelection {
    /// The request id, echoed in the response.
    pub request_id: Option<String>,
    /// The outputs asked for (empty: all).
    pub requested: Vec<RequestedOutput>,
    /// The request's `binary_data_output`.
    pub binary_default: bool,
}

impl OutputSelection {
    /// The selection `request` makes.
    pub fn of(request: &InferRequest) -> Self {
        OutputSelection {
            request_id: request.id.clone(),
            requested: request.outputs.clone(),
            binary_default: request
                .parameters
                .get(BINARY_DATA_OUTPUT)
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        }
    }

    /// Whether output `name` goes out as binary data (see
    /// [`InferRequest::output_wants_binary`]).
    pub fn wants_binary(&self, name: &str) -> bool {
        self.requested
            .iter()
            .find(|o| o.name == name)
            .and_then(|o| o.parameters.get(BINARY_DATA))
            .and_then(|v| v.as_bool())
            .unwrap_or(self.binary_default)
    }

    /// The response with only the selected outputs, in order, and the request id
    /// ([`InferResponse::select_outputs`]).
    pub fn apply(&self, response: InferResponse) -> Result<InferResponse, String> {
        response.select_outputs(self.request_id.as_deref(), &self.requested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TensorData;

    fn out(name: &str) -> Tensor {
        Tensor::new(name, vec![1], TensorData::I32(vec![1])).unwrap()
    }

    #[test]
    fn select_outputs_keeps_the_requested_order_and_echoes_the_id() {
        let response = InferResponse {
            model_name: "m".into(),
            outputs: vec![out("a"), out("b"), out("c")],
            ..InferResponse::default()
        };
        let r = response
            .clone()
            .select_outputs(
                Some("7"),
                &[RequestedOutput::new("c"), RequestedOutput::new("a")],
            )
            .unwrap();
        let names: Vec<_> = r.outputs.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["c", "a"]);
        assert_eq!(r.id.as_deref(), Some("7"));
        let all = response.clone().select_outputs(None, &[]).unwrap();
        assert_eq!(all.outputs.len(), 3);
        let e = response
            .select_outputs(None, &[RequestedOutput::new("z")])
            .unwrap_err();
        assert!(e.contains("'z'"));
    }

    #[test]
    fn wants_output_is_everything_when_nothing_is_named() {
        let mut r = InferRequest::default();
        assert!(r.wants_output("any"));
        r.outputs.push(RequestedOutput::new("y"));
        assert!(r.wants_output("y"));
        assert!(!r.wants_output("z"));
        assert!(!r.output_wants_binary("y"));
    }
}
