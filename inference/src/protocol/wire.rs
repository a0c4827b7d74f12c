//! The REST request and response objects as serde sees them: the shapes the JSON has on the
//! wire, read into owned values ([`WireRequest`], [`WireResponse`]) and written from borrowed
//! ones ([`WireRequestOut`], [`WireResponseOut`]). [`rest`](super::rest) turns them into the
//! protocol types.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::datatype::DataType;
use super::json::{JsonColumn, JsonData, Typed};
use super::tensor::{Parameters, TensorData};

/// The `data` of a tensor as parsed: typed when its `datatype` came first, else a column to
/// be typed once the datatype is known.
#[derive(Debug)]
pub(crate) enum WireData {
    Typed(TensorData),
    Column(JsonColumn),
}

impl WireData {
    pub fn len(&self) -> usize {
        match self {
            WireData::Typed(d) => d.len(),
            WireData::Column(c) => c.len(),
        }
    }
}

/// A tensor as it appears in JSON: a request input or a response output. Unknown fields are
/// ignored; each known one may appear once.
#[derive(Debug)]
pub(crate) struct WireTensor {
    pub name: String,
    pub shape: Vec<u64>,
    pub datatype: DataType,
    pub parameters: Parameters,
    pub data: Option<WireData>,
}

impl<'de> Deserialize<'de> for WireTensor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WireTensor;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a tensor object with name, shape, datatype and data")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<WireTensor, A::Error> {
                let mut name: Option<String> = None;
                let mut shape: Option<Vec<u64>> = None;
                let mut datatype: Option<DataType> = None;
                let mut parameters: Option<Parameters> = None;
                let mut data: Option<WireData> = None;
                fn once<T, E: de::Error>(slot: &Option<T>, field: &'static str) -> Result<(), E> {
                    match slot {
                        Some(_) => Err(E::duplicate_field(field)),
                        None => Ok(()),
                    }
                }
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "name" => {
                            once(&name, "name")?;
                            name = Some(map.next_value()?);
                        }
                        "shape" => {
                            once(&shape, "shape")?;
                            shape = Some(map.next_value()?);
                        }
                        "datatype" => {
                            once(&datatype, "datatype")?;
                            datatype = Some(map.next_value()?);
                        }
                        "parameters" => {
                            once(&parameters, "parameters")?;
                            parameters = Some(map.next_value()?);
                        }
                        "data" => {
                            once(&data, "data")?;
                            data = Some(match datatype {
                                Some(t) => {
                                    let mut typed = TensorData::with_capacity(t, 0);
                                    let name = name.as_deref().unwrap_or("(unnamed)");
                                    map.next_value_seed(Typed {
                                        name,
                                        data: &mut typed,
                                    })?;
                                    WireData::Typed(typed)
                                }
                                None => WireData::Column(map.next_value()?),
                            });
                        }
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(WireTensor {
                    name: name.ok_or_else(|| de::Error::missing_field("name"))?,
                    shape: shape.ok_or_else(|| de::Error::missing_field("shape"))?,
                    datatype: datatype.ok_or_else(|| de::Error::missing_field("datatype"))?,
                    parameters: parameters.unwrap_or_default(),
                    data,
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// A requested output as it appears in JSON.
#[derive(Debug, Deserialize)]
pub(crate) struct WireRequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Parameters,
}

/// The inference request object. Unknown fields are ignored (e.g. `model_name`, which some
/// clients send though the URL already says it).
#[derive(Debug, Deserialize)]
pub(crate) struct WireRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Parameters,
    pub inputs: Vec<WireTensor>,
    #[serde(default)]
    pub outputs: Vec<WireRequestedOutput>,
}

/// The inference response object, as a client reads it.
#[derive(Debug, Deserialize)]
pub(crate) struct WireResponse {
    pub model_name: String,
    #[serde(default)]
    pub model_version: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Parameters,
    pub outputs: Vec<WireTensor>,
}

/// A tensor to write: `data` is left out when the tensor travels as binary.
#[derive(Serialize)]
pub(crate) struct WireTensorOut<'a> {
    pub name: &'a str,
    pub datatype: DataType,
    pub shape: &'a [u64],
    #[serde(skip_serializing_if = "Parameters::is_empty")]
    pub parameters: Parameters,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<JsonData<'a>>,
}

/// The inference response object, as the server writes it.
#[derive(Serialize)]
pub(crate) struct WireResponseOut<'a> {
    pub model_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(skip_serializing_if = "Parameters::is_empty")]
    pub parameters: &'a Parameters,
    pub outputs: Vec<WireTensorOut<'a>>,
}

/// A requested output to write.
#[derive(Serialize)]
pub(crate) struct WireRequestedOutputOut<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Parameters::is_empty")]
    pub parameters: &'a Parameters,
}

/// The inference request object, as a client writes it.
#[derive(Serialize)]
pub(crate) struct WireRequestOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(skip_serializing_if = "Parameters::is_empty")]
    pub parameters: &'a Parameters,
    pub inputs: Vec<WireTensorOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<WireRequestedOutputOut<'a>>,
}
