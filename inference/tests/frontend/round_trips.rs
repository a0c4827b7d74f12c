//! Every datatype through every encoding: REST JSON (nested and flat), the binary extension
//! (request and response), gRPC raw and typed contents, and through the router end to end.

use bytes::Bytes;
use cumulus_inference::protocol::{
    BINARY_DATA, DataType, InferRequest, Limits, OutputSelection, ParameterValue, RequestedOutput,
    Tensor, TensorData, grpc_conv, rest,
};
use half::{bf16, f16};
use serde_json::json;

use super::{app, call, post_bytes};

/// Four finite elements of `datatype` (JSON has no NaN or infinities), extremes included.
fn sample(datatype: DataType) -> TensorData {
    match datatype {
        DataType::Bool => TensorData::Bool(vec![true, false, false, true]),
        DataType::Int8 => TensorData::I8(vec![i8::MIN, -1, 0, i8::MAX]),
        DataType::Int16 => TensorData::I16(vec![i16::MIN, -1, 0, i16::MAX]),
        DataType::Int32 => TensorData::I32(vec![i32::MIN, -1, 0, i32::MAX]),
        DataType::Int64 => TensorData::I64(vec![i64::MIN, -1, 0, i64::MAX]),
        DataType::Uint8 => TensorData::U8(vec![0, 1, 128, u8::MAX]),
        DataType::Uint16 => TensorData::U16(vec![0, 1, 300, u16::MAX]),
        DataType::Uint32 => TensorData::U32(vec![0, 1, 70000, u32::MAX]),
        DataType::Uint64 => TensorData::U64(vec![0, 1, 1 << 40, u64::MAX]),
        DataType::Fp16 => TensorData::F16(vec![
            f16::MIN,
            f16::from_f32(-0.333),
            f16::MIN_POSITIVE_SUBNORMAL,
            f16::MAX,
        ]),
        DataType::Bf16 => TensorData::Bf16(vec![
            bf16::MIN,
            bf16::from_f32(-0.333),
            bf16::EPSILON,
            bf16::MAX,
        ]),
        DataType::Fp32 => TensorData::F32(vec![f32::MIN, -0.1, f32::MIN_POSITIVE, f32::MAX]),
        DataType::Fp64 => TensorData::F64(vec![f64::MIN, -0.1, 5e-324, f64::MAX]),
        DataType::Bytes => TensorData::Bytes(vec![
            Bytes::from_static(b""),
            Bytes::from_static("héllo".as_bytes()),
            Bytes::from_static(b"a b"),
            Bytes::from_static(b"{\"json\": 1}"),
        ]),
    }
}

fn request_of(datatype: DataType) -> InferRequest {
    InferRequest {
        id: Some(format!("rt-{datatype}")),
        parameters: [("p", ParameterValue::String("v".into()))]
            .into_iter()
            .collect(),
        inputs: vec![Tensor::new("INPUT0", vec![2, 2], sample(datatype)).unwrap()],
        outputs: vec![RequestedOutput::new("OUTPUT0")],
    }
}

#[test]
fn rest_json_flat_and_binary_requests_round_trip_every_type() {
    for datatype in DataType::ALL {
        let request = request_of(datatype);
        for binary in [false, true] {
            let encoded = rest::encode_request(&request, binary).unwrap();
            assert_eq!(encoded.header_len.is_some(), binary);
            let back = rest::decode_request(
                &Bytes::from(encoded.body),
                encoded.header_len,
                &Limits::default(),
            )
            .unwrap_or_else(|e| panic!("{datatype} binary={binary}: {e}"));
            assert_eq!(back, request, "{datatype} binary={binary}");
        }
    }
}

#[test]
fn rest_nested_json_equals_flat() {
    for datatype in DataType::ALL {
        let flat = rest::encode_request(&request_of(datatype), false).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&flat.body).unwrap();
        let data = v["inputs"][0]["data"].as_array().unwrap().clone();
        v["inputs"][0]["data"] = json!([[data[0], data[1]], [data[2], data[3]]]);
        let nested = Bytes::from(v.to_string());
        let back = rest::decode_request(&nested, None, &Limits::default()).unwrap();
        assert_eq!(back, request_of(datatype), "{datatype}");
    }
}

#[test]
fn rest_responses_round_trip_every_type_in_json_and_binary() {
    for datatype in DataType::ALL {
        let request = request_of(datatype);
        let response = cumulus_inference::protocol::InferResponse {
            model_name: "m".into(),
            model_version: None,
            id: None,
            parameters: Default::default(),
            outputs: vec![Tensor::new("OUTPUT0", vec![2, 2], sample(datatype)).unwrap()],
        };
        for binary in [false, true] {
            let mut r = request.clone();
            r.outputs[0]
                .parameters
                .insert(BINARY_DATA, ParameterValue::Bool(binary));
            let encoded =
                rest::encode_response(response.clone(), &OutputSelection::of(&r)).unwrap();
            let back = rest::decode_response(
                &Bytes::from(encoded.body),
                encoded.header_len,
                &Limits::default(),
            )
            .unwrap();
            assert_eq!(back.outputs, response.outputs, "{datatype} binary={binary}");
            assert_eq!(back.id.as_deref(), Some(format!("rt-{datatype}").as_str()));
        }
    }
}

#[test]
fn grpc_raw_and_typed_contents_round_trip_every_type() {
    for datatype in DataType::ALL {
        let request = request_of(datatype);
        for raw in [true, false] {
            let typed_impossible = !raw && matches!(datatype, DataType::Fp16 | DataType::Bf16);
            let msg = grpc_conv::request_to_grpc("m", Some("1"), &request, raw);
            if typed_impossible {
                assert!(msg.is_err(), "{datatype} has no typed contents");
                continue;
            }
            let msg = msg.unwrap();
            assert_eq!(msg.raw_input_contents.is_empty(), !raw);
            let (model, version, back) =
                grpc_conv::request_from_grpc(msg, &Limits::default()).unwrap();
            assert_eq!((model.as_str(), version.as_deref()), ("m", Some("1")));
            assert_eq!(back, request, "{datatype} raw={raw}");
        }
    }
}

#[tokio::test]
async fn every_type_through_the_router_in_json_and_binary() {
    let app = app();
    for datatype in DataType::ALL {
        let request = request_of(datatype);
        for binary in [false, true] {
            let mut r = request.clone();
            r.outputs[0]
                .parameters
                .insert(BINARY_DATA, ParameterValue::Bool(binary));
            let encoded = rest::encode_request(&r, binary).unwrap();
            let model = format!(
                "/v2/models/identity_{}/infer",
                datatype.as_str().to_lowercase()
            );
            let (s, h, b) = call(&app, post_bytes(&model, encoded.body, encoded.header_len)).await;
            assert_eq!(
                s,
                200,
                "{datatype} binary={binary}: {}",
                String::from_utf8_lossy(&b)
            );
            let header_len = h
                .get("inference-header-content-length")
                .map(|v| v.to_str().unwrap().parse().unwrap());
            assert_eq!(header_len.is_some(), binary);
            let back = rest::decode_response(&b, header_len, &Limits::default()).unwrap();
            assert_eq!(
                back.outputs[0].data,
                sample(datatype),
                "{datatype} binary={binary}"
            );
            assert_eq!(back.outputs[0].shape, [2, 2]);
            assert_eq!(back.id, request.id);
            assert_eq!(
                back.parameters.get("p"),
                Some(&ParameterValue::String("v".into()))
            );
        }
    }
}

#[tokio::test]
async fn non_utf8_bytes_need_binary_output() {
    let mut request = InferRequest {
        inputs: vec![
            Tensor::new(
                "INPUT0",
                vec![1, 1],
                TensorData::Bytes(vec![Bytes::from_static(b"\xff\xfe")]),
            )
            .unwrap(),
        ],
        ..Default::default()
    };
    let encoded = rest::encode_request(&request, true).unwrap();
    let (s, _, b) = call(
        &app(),
        post_bytes(
            "/v2/models/identity_bytes/infer",
            encoded.body,
            encoded.header_len,
        ),
    )
    .await;
    assert_eq!(s, 400);
    assert!(super::error_of(&b).contains("binary_data"));
    request
        .parameters
        .insert("binary_data_output", ParameterValue::Bool(true));
    let encoded = rest::encode_request(&request, true).unwrap();
    let (s, h, b) = call(
        &app(),
        post_bytes(
            "/v2/models/identity_bytes/infer",
            encoded.body,
            encoded.header_len,
        ),
    )
    .await;
    assert_eq!(s, 200);
    let n = h["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let back = rest::decode_response(&b, Some(n), &Limits::default()).unwrap();
    assert_eq!(back.outputs[0].data, request.inputs[0].data);
}
