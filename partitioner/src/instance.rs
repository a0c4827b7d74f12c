//! The partitioning instance: the JSON file users and tools write ([`Instance`], [`Layer`]), its
//! validation, and [`Problem`], the validated, dense form the solver and the LP export work on.
//!
//! ```json
//! { "layers": [ { "name": "conv1", "weight_bytes": 37632, "activation_bytes": 802816,
//!                 "output_bytes": 802816, "time_ms": { "512": 3.1, "1024": 1.7 } } ],
//!   "input_bytes": 602112, "tiers_mb": [512, 1024],
//!   "price_per_gb_s": 0.0000166667, "price_per_invocation": 0.0000002,
//!   "slo_ms": 200.0, "invoke_overhead_ms": 5.0, "bandwidth_bytes_per_ms": 70000.0,
//!   "max_payload_bytes": 6291456, "max_functions": 8, "base_memory_mb": 100 }
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::error::{PartitionError, Result};

/// Most layers an instance may have.
pub const MAX_LAYERS: usize = 100_000;
/// Most memory tiers an instance may have.
pub const MAX_TIERS: usize = 64;
/// Most functions (groups) an instance may allow.
pub const MAX_FUNCTIONS: usize = 1024;
/// Largest tier, and largest base memory, in MB (1 TiB).
pub const MAX_TIER_MB: u32 = 1 << 20;
/// Largest byte count of any one value (1 PiB); keeps every sum exact in `u64` and in `f64`.
pub const MAX_BYTES: u64 = 1 << 50;
/// Longest layer name, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// One layer's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Non-empty name, reported in plans.
    pub name: String,
    /// Bytes of the layer's weights resident in the function that runs it.
    pub weight_bytes: u64,
    /// Peak bytes of activations while the layer runs; a group needs the largest of its layers'.
    pub activation_bytes: u64,
    /// Bytes of the layer's output: the payload sent to the next function when a cut follows it.
    pub output_bytes: u64,
    /// Run time in ms at each tier (keys are tiers in MB, written as JSON strings: `"512"`);
    /// a tier without an entry is one the layer cannot run at.
    pub time_ms: BTreeMap<u32, f64>,
}

/// A partitioning instance, exactly as the JSON file (`cumulus partition --instance FILE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// The model's layers in execution order.
    pub layers: Vec<Layer>,
    /// Bytes of the model input, the payload of the first function.
    pub input_bytes: u64,
    /// Memory tiers a function can be given, in MB (any order, no duplicates).
    pub tiers_mb: Vec<u32>,
    /// Price per GB-second of billed time (GB = 1024 MB).
    pub price_per_gb_s: f64,
    /// Price per function invocation.
    pub price_per_invocation: f64,
    /// End-to-end latency objective in ms.
    pub slo_ms: f64,
    /// Fixed latency each invocation adds, in ms (not billed).
    pub invoke_overhead_ms: f64,
    /// Transfer rate of a function's input payload, in bytes per ms (billed).
    pub bandwidth_bytes_per_ms: f64,
    /// Largest payload a function can be invoked with.
    pub max_payload_bytes: u64,
    /// Most functions (groups) a plan may use.
    pub max_functions: usize,
    /// Memory every function needs besides weights and activations (runtime, code), in MB.
    pub base_memory_mb: u32,
}

impl Instance {
    /// Parses and validates an instance. A bad one is refused with the path of the offending
    /// field and the reason (`layers[3].time_ms["512"]: must be finite and >= 0`).
    pub fn from_json(text: &str) -> Result<Self> {
        let instance: Self = match serde_json::from_str(text) {
            Ok(instance) => instance,
            Err(e) => return Err(locate_parse_error(text, e)),
        };
        instance.validate()?;
        Ok(instance)
    }

    /// Pretty JSON of the instance, the format [`Instance::from_json`] reads.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("an instance always serializes: no maps with non-string keys, no non-finite floats after validation")
    }

    /// Checks every value is in range; the error names the field and why.
    pub fn validate(&self) -> Result<()> {
        Problem::new(self).map(|_| ())
    }
}

/// A validated instance in dense form: tiers sorted ascending, times as a layers × tiers matrix.
/// Built once by [`Problem::new`]; [`Problem::solve`](crate::Problem::solve) and the LP export
/// read it.
#[derive(Debug, Clone)]
pub struct Problem {
    pub(crate) names: Vec<String>,
    pub(crate) weight: Vec<u64>,
    pub(crate) activation: Vec<u64>,
    pub(crate) output: Vec<u64>,
    /// Ascending.
    pub(crate) tiers_mb: Vec<u32>,
    /// `time[l * tiers + t]`, NaN where the layer cannot run at tier `t`.
    pub(crate) time: Vec<f64>,
    pub(crate) input_bytes: u64,
    pub(crate) price_per_gb_s: f64,
    pub(crate) price_per_invocation: f64,
    pub(crate) slo_ms: f64,
    pub(crate) invoke_overhead_ms: f64,
    pub(crate) bandwidth_bytes_per_ms: f64,
    pub(crate) max_payload_bytes: u64,
    pub(crate) max_functions: usize,
    pub(crate) base_memory_mb: u32,
}

impl Problem {
    /// Validates `instance` and builds its dense form.
    pub fn new(instance: &Instance) -> Result<Self> {
        let n = instance.layers.len();
        if n == 0 {
            return Err(PartitionError::invalid(
                "layers",
                "must hold at least one layer",
            ));
        }
        if n > MAX_LAYERS {
            return Err(PartitionError::invalid(
                "layers",
                format!("{n} layers, at most {MAX_LAYERS} are accepted"),
            ));
        }
        let tiers_mb = validate_tiers(&instance.tiers_mb)?;
        let t = tiers_mb.len();
        check_bytes("input_bytes", instance.input_bytes)?;
        check_bytes("max_payload_bytes", instance.max_payload_bytes)?;
        check_float("price_per_gb_s", instance.price_per_gb_s, 0.0, 1e6, true)?;
        check_float(
            "price_per_invocation",
            instance.price_per_invocation,
            0.0,
            1e6,
            true,
        )?;
        check_float("slo_ms", instance.slo_ms, 0.0, 1e12, false)?;
        check_float(
            "invoke_overhead_ms",
            instance.invoke_overhead_ms,
            0.0,
            1e12,
            true,
        )?;
        check_float(
            "bandwidth_bytes_per_ms",
            instance.bandwidth_bytes_per_ms,
            0.0,
            1e18,
            false,
        )?;
        if instance.max_functions == 0 || instance.max_functions > MAX_FUNCTIONS {
            return Err(PartitionError::invalid(
                "max_functions",
                format!("must be in 1..={MAX_FUNCTIONS}"),
            ));
        }
        if instance.base_memory_mb > MAX_TIER_MB {
            return Err(PartitionError::invalid(
                "base_memory_mb",
                format!("must be at most {MAX_TIER_MB}"),
            ));
        }

        let mut names = Vec::with_capacity(n);
        let mut weight = Vec::with_capacity(n);
        let mut activation = Vec::with_capacity(n);
        let mut output = Vec::with_capacity(n);
        let mut time = vec![f64::NAN; n * t];
        for (l, layer) in instance.layers.iter().enumerate() {
            let at = |field: &str| format!("layers[{l}].{field}");
            if layer.name.trim().is_empty() {
                return Err(PartitionError::invalid(at("name"), "must not be empty"));
            }
            if layer.name.len() > MAX_NAME_LEN {
                return Err(PartitionError::invalid(
                    at("name"),
                    format!("must be at most {MAX_NAME_LEN} bytes"),
                ));
            }
            check_bytes(&at("weight_bytes"), layer.weight_bytes)?;
            check_bytes(&at("activation_bytes"), layer.activation_bytes)?;
            check_bytes(&at("output_bytes"), layer.output_bytes)?;
            for (&tier, &ms) in &layer.time_ms {
                let field = format!("layers[{l}].time_ms[\"{tier}\"]");
                let Ok(ti) = tiers_mb.binary_search(&tier) else {
                    return Err(PartitionError::invalid(
                        field,
                        format!("{tier} is not one of tiers_mb {tiers_mb:?}"),
                    ));
                };
                if !(ms.is_finite() && (0.0..=1e12).contains(&ms)) {
                    return Err(PartitionError::invalid(
                        field,
                        format!("must be finite and >= 0 (and at most 1e12), got {ms}"),
                    ));
                }
                time[l * t + ti] = ms;
            }
            names.push(layer.name.clone());
            weight.push(layer.weight_bytes);
            activation.push(layer.activation_bytes);
            output.push(layer.output_bytes);
        }

        Ok(Self {
            names,
            weight,
            activation,
            output,
            tiers_mb,
            time,
            input_bytes: instance.input_bytes,
            price_per_gb_s: instance.price_per_gb_s,
            price_per_invocation: instance.price_per_invocation,
            slo_ms: instance.slo_ms,
            invoke_overhead_ms: instance.invoke_overhead_ms,
            bandwidth_bytes_per_ms: instance.bandwidth_bytes_per_ms,
            max_payload_bytes: instance.max_payload_bytes,
            max_functions: instance.max_functions,
            base_memory_mb: instance.base_memory_mb,
        })
    }

    /// Number of layers.
    pub fn layers(&self) -> usize {
        self.names.len()
    }

    /// Tiers in MB, ascending.
    pub fn tiers_mb(&self) -> &[u32] {
        &self.tiers_mb
    }

    /// Number of tiers.
    pub(crate) fn tier_count(&self) -> usize {
        self.tiers_mb.len()
    }

    /// Run time of layer `l` at tier index `t`; `None` when it cannot run there.
    pub(crate) fn time(&self, l: usize, t: usize) -> Option<f64> {
        let ms = self.time[l * self.tiers_mb.len() + t];
        (!ms.is_nan()).then_some(ms)
    }

    /// Input payload of a group that starts at layer `first`.
    pub(crate) fn input_of(&self, first: usize) -> u64 {
        if first == 0 {
            self.input_bytes
        } else {
            self.output[first - 1]
        }
    }

    pub(crate) fn base_bytes(&self) -> u64 {
        u64::from(self.base_memory_mb) << 20
    }

    pub(crate) fn tier_bytes(&self, t: usize) -> u64 {
        u64::from(self.tiers_mb[t]) << 20
    }

    /// Functions a plan can actually use: never more than there are layers.
    pub(crate) fn effective_max_functions(&self) -> usize {
        self.max_functions.min(self.layers())
    }
}

fn validate_tiers(tiers: &[u32]) -> Result<Vec<u32>> {
    if tiers.is_empty() {
        return Err(PartitionError::invalid(
            "tiers_mb",
            "must hold at least one tier",
        ));
    }
    if tiers.len() > MAX_TIERS {
        return Err(PartitionError::invalid(
            "tiers_mb",
            format!("{} tiers, at most {MAX_TIERS} are accepted", tiers.len()),
        ));
    }
    for (i, &mb) in tiers.iter().enumerate() {
        if mb == 0 || mb > MAX_TIER_MB {
            return Err(PartitionError::invalid(
                format!("tiers_mb[{i}]"),
                format!("must be in 1..={MAX_TIER_MB} MB, got {mb}"),
            ));
        }
    }
    let mut sorted = tiers.to_vec();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        let i = tiers
            .iter()
            .rposition(|&mb| mb == w[0])
            .expect("a duplicate is in the list");
        return Err(PartitionError::invalid(
            format!("tiers_mb[{i}]"),
            format!("{} MB is listed twice", w[0]),
        ));
    }
    Ok(sorted)
}

fn check_bytes(field: &str, value: u64) -> Result<()> {
    if value > MAX_BYTES {
        return Err(PartitionError::invalid(
            field,
            format!("must be at most {MAX_BYTES} bytes (1 PiB), got {value}"),
        ));
    }
    Ok(())
}

fn check_float(field: &str, value: f64, min: f64, max: f64, min_inclusive: bool) -> Result<()> {
    let above_min = if min_inclusive {
        value >= min
    } else {
        value > min
    };
    if !(value.is_finite() && above_min && value <= max) {
        let op = if min_inclusive { ">=" } else { ">" };
        return Err(PartitionError::invalid(
            field,
            format!("must be finite and {op} {min} (and at most {max:e}), got {value}"),
        ));
    }
    Ok(())
}

/// Turns serde's error into one that names the offending field: serde_json says "missing field"
/// and "unknown field" by name but reports a value of the wrong type only by line and column, so
/// the text is re-read as a JSON value and each field checked on its own.
fn locate_parse_error(text: &str, error: serde_json::Error) -> PartitionError {
    let at_instance = || PartitionError::Parse {
        field: "instance".to_string(),
        reason: error.to_string(),
    };
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return at_instance();
    };
    let Some(object) = value.as_object() else {
        return at_instance();
    };
    for (key, v) in object {
        let found = match key.as_str() {
            "layers" => locate_in_layers(v),
            "input_bytes" | "max_payload_bytes" => check_type::<u64>(key, v),
            "tiers_mb" => check_type::<Vec<u32>>(key, v),
            "max_functions" => check_type::<usize>(key, v),
            "base_memory_mb" => check_type::<u32>(key, v),
            "price_per_gb_s"
            | "price_per_invocation"
            | "slo_ms"
            | "invoke_overhead_ms"
            | "bandwidth_bytes_per_ms" => check_type::<f64>(key, v),
            _ => None,
        };
        if let Some(found) = found {
            return found;
        }
    }
    at_instance()
}

fn locate_in_layers(value: &Value) -> Option<PartitionError> {
    let layers = value.as_array()?;
    for (l, layer) in layers.iter().enumerate() {
        if let Some(fields) = layer.as_object() {
            for (key, v) in fields {
                let field = format!("layers[{l}].{key}");
                let found = match key.as_str() {
                    "name" => check_type::<String>(&field, v),
                    "weight_bytes" | "activation_bytes" | "output_bytes" => {
                        check_type::<u64>(&field, v)
                    }
                    "time_ms" => locate_in_times(&field, v),
                    _ => None,
                };
                if found.is_some() {
                    return found;
                }
            }
        }
        // Missing and unknown fields: serde names them, the index says which layer.
        if let Err(e) = Layer::deserialize(layer) {
            return Some(PartitionError::Parse {
                field: format!("layers[{l}]"),
                reason: e.to_string(),
            });
        }
    }
    None
}

fn locate_in_times(field: &str, value: &Value) -> Option<PartitionError> {
    let Some(times) = value.as_object() else {
        return check_type::<BTreeMap<u32, f64>>(field, value);
    };
    for (tier, ms) in times {
        let at = format!("{field}[\"{tier}\"]");
        if tier.parse::<u32>().is_err() {
            return Some(PartitionError::Parse {
                field: at,
                reason: "a key must be a tier in MB (a whole number)".to_string(),
            });
        }
        if let Some(found) = check_type::<f64>(&at, ms) {
            return Some(found);
        }
    }
    None
}

fn check_type<T: DeserializeOwned>(field: &str, value: &Value) -> Option<PartitionError> {
    T::deserialize(value).err().map(|e| PartitionError::Parse {
        field: field.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = r#"{ "layers": [ { "name": "conv1", "weight_bytes": 37632, "activation_bytes": 802816,
                "output_bytes": 802816, "time_ms": { "512": 3.1, "1024": 1.7, "2048": 1.1 } } ],
  "input_bytes": 602112,
  "tiers_mb": [2048, 512, 1024],
  "price_per_gb_s": 0.0000166667, "price_per_invocation": 0.0000002,
  "slo_ms": 200.0, "invoke_overhead_ms": 5.0, "bandwidth_bytes_per_ms": 70000.0,
  "max_payload_bytes": 6291456, "max_functions": 8, "base_memory_mb": 100 }"#;

    fn error_of(text: &str) -> String {
        Instance::from_json(text).unwrap_err().to_string()
    }

    #[test]
    fn the_example_parses_and_sorts_tiers() {
        let instance = Instance::from_json(EXAMPLE).unwrap();
        let problem = Problem::new(&instance).unwrap();
        assert_eq!(problem.tiers_mb(), &[512, 1024, 2048]);
        assert_eq!(problem.time(0, 0), Some(3.1));
        assert_eq!(problem.time(0, 2), Some(1.1));
        let again = Instance::from_json(&instance.to_json()).unwrap();
        assert_eq!(again, instance);
    }

    #[test]
    fn a_bad_time_names_the_layer_and_the_tier() {
        let mut instance = Instance::from_json(EXAMPLE).unwrap();
        instance.layers[0].time_ms.insert(512, f64::NAN);
        assert_eq!(
            instance.validate().unwrap_err().to_string(),
            "layers[0].time_ms[\"512\"]: must be finite and >= 0 (and at most 1e12), got NaN"
        );
        let text = EXAMPLE.replace("\"512\": 3.1", "\"512\": -3.1");
        assert!(error_of(&text).starts_with("layers[0].time_ms[\"512\"]: must be finite and >= 0"));
        let text = EXAMPLE.replace("\"512\": 3.1", "\"384\": 3.1");
        assert!(
            error_of(&text).starts_with("layers[0].time_ms[\"384\"]: 384 is not one of tiers_mb")
        );
        let text = EXAMPLE.replace("\"512\": 3.1", "\"fast\": 3.1");
        assert!(error_of(&text).starts_with("layers[0].time_ms[\"fast\"]: a key must be a tier"));
    }

    #[test]
    fn type_errors_name_the_field() {
        let text = EXAMPLE.replace("\"weight_bytes\": 37632", "\"weight_bytes\": -5");
        assert!(error_of(&text).starts_with("layers[0].weight_bytes: invalid value: integer `-5`"));
        let text = EXAMPLE.replace("\"weight_bytes\": 37632", "\"weight_bytes\": 1.5");
        assert!(
            error_of(&text).starts_with("layers[0].weight_bytes: invalid type: floating point")
        );
        let text = EXAMPLE.replace("\"slo_ms\": 200.0", "\"slo_ms\": \"fast\"");
        assert!(error_of(&text).starts_with("slo_ms: invalid type: string"));
        let text = EXAMPLE.replace("\"name\": \"conv1\", ", "");
        assert!(error_of(&text).starts_with("layers[0]: missing field `name`"));
        let text = EXAMPLE.replace("\"name\": \"conv1\"", "\"nom\": \"conv1\"");
        assert!(error_of(&text).starts_with("layers[0]: unknown field `nom`"));
        let text = EXAMPLE.replace(
            "\"max_functions\": 8,",
            "\"max_functions\": 8, \"gpu\": true,",
        );
        assert!(error_of(&text).starts_with("instance: unknown field `gpu`"));
        assert!(error_of("{ not json").starts_with("instance: "));
    }

    #[test]
    fn ranges_are_checked() {
        let cases = [
            (
                "\"tiers_mb\": [2048, 512, 1024]",
                "\"tiers_mb\": []",
                "tiers_mb: must hold at least one tier",
            ),
            (
                "\"tiers_mb\": [2048, 512, 1024]",
                "\"tiers_mb\": [512, 0]",
                "tiers_mb[1]: must be in 1..=",
            ),
            (
                "\"tiers_mb\": [2048, 512, 1024]",
                "\"tiers_mb\": [512, 1024, 512]",
                "tiers_mb[2]: 512 MB is listed twice",
            ),
            (
                "\"slo_ms\": 200.0",
                "\"slo_ms\": 0.0",
                "slo_ms: must be finite and > 0",
            ),
            (
                "\"bandwidth_bytes_per_ms\": 70000.0",
                "\"bandwidth_bytes_per_ms\": 0",
                "bandwidth_bytes_per_ms: must be finite and > 0",
            ),
            (
                "\"price_per_gb_s\": 0.0000166667",
                "\"price_per_gb_s\": -1",
                "price_per_gb_s: must be finite and >= 0",
            ),
            (
                "\"invoke_overhead_ms\": 5.0",
                "\"invoke_overhead_ms\": -5.0",
                "invoke_overhead_ms: must be finite and >= 0",
            ),
            (
                "\"max_functions\": 8",
                "\"max_functions\": 0",
                "max_functions: must be in 1..=1024",
            ),
            (
                "\"name\": \"conv1\"",
                "\"name\": \"  \"",
                "layers[0].name: must not be empty",
            ),
            (
                "\"output_bytes\": 802816",
                "\"output_bytes\": 9999999999999999",
                "layers[0].output_bytes: must be at most",
            ),
        ];
        for (from, to, expected) in cases {
            let text = EXAMPLE.replace(from, to);
            assert_ne!(text, EXAMPLE, "{from}");
            let message = error_of(&text);
            assert!(
                message.starts_with(expected),
                "{message:?} should start with {expected:?}"
            );
        }
        let text = EXAMPLE.replace(
            &EXAMPLE
                [EXAMPLE.find("[ {").unwrap()..EXAMPLE.find("],\n  \"input_bytes\"").unwrap() + 1],
            "[]",
        );
        assert_eq!(error_of(&text), "layers: must hold at least one layer");
    }
}
