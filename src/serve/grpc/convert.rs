//! ModelInfer's protobuf messages to what [`oip`](crate::serve::oip) reads: the BYTES
//! inputs (typed `contents` or `raw_input_contents`) and the `InferParameter` map as
//! the JSON parameters of the REST route.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::pb::InferParameter;
use super::pb::infer_parameter::ParameterChoice;
use super::pb::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use crate::serve::error::ApiError;
use crate::serve::oip::{self, BytesInput};

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::bad_request(m)
}

/// The inputs' strings: from `raw` (one entry per input, in order) when it is given,
/// else from each input's `contents.bytes_contents`; the spec allows one form only.
pub(crate) fn inputs(
    inputs: &[InferInputTensor],
    raw: &[Vec<u8>],
) -> Result<Vec<BytesInput>, ApiError> {
    if !raw.is_empty() && raw.len() != inputs.len() {
        return Err(bad(format!(
            "raw_input_contents has {} entries for {} inputs; give one per input",
            raw.len(),
            inputs.len()
        )));
    }
    inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let name = input.name.as_str();
            oip::check_datatype(name, &input.datatype)?;
            let strings = match (raw.get(i), &input.contents) {
                (Some(_), Some(_)) => {
                    return Err(bad(format!(
                        "input {name:?} has contents while raw_input_contents is given; use one form"
                    )));
                }
                (Some(bytes), None) => oip::decode_raw_bytes(name, bytes)?,
                (None, Some(contents)) => contents
                    .bytes_contents
                    .iter()
                    .map(|b| oip::utf8(name, b))
                    .collect::<Result<Vec<_>, _>>()?,
                (None, None) => {
                    return Err(bad(format!(
                        "input {name:?} has no data: set contents.bytes_contents or raw_input_contents"
                    )));
                }
            };
            oip::check_shape(name, &input.shape, strings.len())?;
            Ok(BytesInput {
                name: input.name.clone(),
                strings,
                scalar: input.shape.is_empty(),
            })
        })
        .collect()
}

/// Request parameters as the JSON object the REST route takes.
pub(crate) fn parameters(
    parameters: &HashMap<String, InferParameter>,
) -> Result<Map<String, Value>, ApiError> {
    parameters
        .iter()
        .map(|(name, p)| {
            let value = match &p.parameter_choice {
                Some(ParameterChoice::BoolParam(b)) => Value::Bool(*b),
                Some(ParameterChoice::Int64Param(n)) => Value::from(*n),
                Some(ParameterChoice::Uint64Param(n)) => Value::from(*n),
                Some(ParameterChoice::StringParam(s)) => Value::String(s.clone()),
                Some(ParameterChoice::DoubleParam(x)) => serde_json::Number::from_f64(*x)
                    .map(Value::Number)
                    .ok_or_else(|| bad(format!("parameter {name:?} is not a finite number")))?,
                None => return Err(bad(format!("parameter {name:?} has no value"))),
            };
            Ok((name.clone(), value))
        })
        .collect()
}

/// Refuses requested outputs the model does not have.
pub(crate) fn check_outputs(outputs: &[InferRequestedOutputTensor]) -> Result<(), ApiError> {
    match outputs.iter().find(|o| o.name != oip::IMAGE_OUTPUT) {
        Some(o) => Err(bad(format!(
            "unknown output {:?}: this model's output is \"{}\"",
            o.name,
            oip::IMAGE_OUTPUT
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::grpc::pb::InferTensorContents;

    fn bytes_tensor(name: &str, shape: &[i64], data: Option<&[&str]>) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: "BYTES".into(),
            shape: shape.to_vec(),
            parameters: HashMap::new(),
            contents: data.map(|d| InferTensorContents {
                bytes_contents: d.iter().map(|s| s.as_bytes().to_vec()).collect(),
                ..Default::default()
            }),
        }
    }

    fn param(p: ParameterChoice) -> InferParameter {
        InferParameter {
            parameter_choice: Some(p),
        }
    }

    #[test]
    fn typed_and_raw_inputs_read_alike() {
        let typed = vec![bytes_tensor("prompt", &[1], Some(&["a red circle"]))];
        let got = inputs(&typed, &[]).expect("typed");
        assert_eq!(got[0].strings, vec!["a red circle"]);
        let raw_input = vec![bytes_tensor("prompt", &[1], None)];
        let mut raw = 12u32.to_le_bytes().to_vec();
        raw.extend_from_slice(b"a red circle");
        let got = inputs(&raw_input, &[raw.clone()]).expect("raw");
        assert_eq!(got[0].strings, vec!["a red circle"]);
        assert!(!got[0].scalar);
        // Both forms, neither, a wrong count, a shape that does not fit, FP32 prompts.
        assert!(inputs(&typed, &[raw.clone()]).is_err());
        assert!(inputs(&raw_input, &[]).is_err());
        assert!(inputs(&raw_input, &[raw.clone(), raw.clone()]).is_err());
        assert!(inputs(&[bytes_tensor("prompt", &[2], None)], &[raw]).is_err());
        let mut fp32 = bytes_tensor("prompt", &[1], Some(&["x"]));
        fp32.datatype = "FP32".into();
        assert!(inputs(&[fp32], &[]).is_err());
    }

    #[test]
    fn parameters_become_json() {
        let mut map = HashMap::new();
        map.insert("seed".to_string(), param(ParameterChoice::Int64Param(42)));
        map.insert(
            "guidance_scale".to_string(),
            param(ParameterChoice::DoubleParam(7.5)),
        );
        let json = parameters(&map).expect("valid");
        assert_eq!(json["seed"], 42);
        assert_eq!(json["guidance_scale"], 7.5);
        map.insert(
            "x".to_string(),
            InferParameter {
                parameter_choice: None,
            },
        );
        assert!(parameters(&map).is_err());
        let mut nan = HashMap::new();
        nan.insert(
            "g".to_string(),
            param(ParameterChoice::DoubleParam(f64::NAN)),
        );
        assert!(parameters(&nan).is_err());
    }
}
