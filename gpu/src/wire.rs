//! Conversions between the executor's types and `gpu.v1` messages, both directions, in one
//! place (the server encodes what the client decodes).

use cumulus_models::Loss;
use cumulus_proto::gpu::v1 as pb;

use crate::config::Priority;
use crate::error::{GpuError, Result};
use crate::executor::{ExecutorStats, ModelHandle, TenantStats, WorkOutput};
use crate::tensor::HostTensor;

pub fn priority_to_proto(p: Priority) -> pb::Priority {
    match p {
        Priority::Normal => pb::Priority::Normal,
        Priority::LatencyCritical => pb::Priority::LatencyCritical,
    }
}

pub fn priority_from_proto(v: i32) -> Result<Priority> {
    match pb::Priority::try_from(v) {
        Ok(pb::Priority::Normal) => Ok(Priority::Normal),
        Ok(pb::Priority::LatencyCritical) => Ok(Priority::LatencyCritical),
        Err(_) => Err(GpuError::InvalidRequest(format!("unknown priority {v}"))),
    }
}

pub fn loss_to_proto(l: Loss) -> pb::LossKind {
    match l {
        Loss::CrossEntropy => pb::LossKind::CrossEntropy,
        Loss::Mse => pb::LossKind::Mse,
        Loss::BinaryLogistic => pb::LossKind::BinaryLogistic,
    }
}

pub fn loss_from_proto(v: i32) -> Result<Loss> {
    match pb::LossKind::try_from(v) {
        Ok(pb::LossKind::CrossEntropy) => Ok(Loss::CrossEntropy),
        Ok(pb::LossKind::Mse) => Ok(Loss::Mse),
        Ok(pb::LossKind::BinaryLogistic) => Ok(Loss::BinaryLogistic),
        _ => Err(GpuError::InvalidRequest(format!(
            "loss kind {v} is not cross_entropy, mse or binary_logistic"
        ))),
    }
}

/// A required tensor field.
pub fn tensor(t: Option<&pb::Tensor>, what: &str, max_elements: usize) -> Result<HostTensor> {
    let t = t.ok_or_else(|| GpuError::InvalidRequest(format!("missing tensor `{what}`")))?;
    HostTensor::from_proto(t, max_elements)
}

pub fn named(tensors: &[(String, HostTensor)]) -> Vec<pb::NamedTensor> {
    tensors
        .iter()
        .map(|(name, t)| pb::NamedTensor {
            name: name.clone(),
            tensor: Some(t.to_proto()),
        })
        .collect()
}

pub fn from_named(
    tensors: &[pb::NamedTensor],
    max_elements: usize,
) -> Result<Vec<(String, HostTensor)>> {
    tensors
        .iter()
        .map(|n| {
            Ok((
                n.name.clone(),
                tensor(n.tensor.as_ref(), &n.name, max_elements)?,
            ))
        })
        .collect()
}

pub fn model_to_proto(h: &ModelHandle) -> pb::LoadModelResponse {
    pb::LoadModelResponse {
        handle: h.id,
        model_hash: h.model_hash.clone(),
        shared: h.shared,
        weight_bytes: h.weight_bytes,
        first_layer: h.first_layer as u32,
        last_layer: h.last_layer as u32,
        layers: h
            .layers
            .iter()
            .map(|(name, kind)| pb::LayerSummary {
                name: name.clone(),
                kind: kind.clone(),
            })
            .collect(),
        arch: h.arch.clone(),
    }
}

pub fn model_from_proto(r: pb::LoadModelResponse) -> ModelHandle {
    ModelHandle {
        id: r.handle,
        model_hash: r.model_hash,
        arch: r.arch,
        shared: r.shared,
        weight_bytes: r.weight_bytes,
        first_layer: r.first_layer as usize,
        last_layer: r.last_layer as usize,
        layers: r.layers.into_iter().map(|l| (l.name, l.kind)).collect(),
    }
}

pub fn forward_to_proto(out: WorkOutput) -> Result<pb::ForwardResponse> {
    let output = out
        .tensors
        .into_iter()
        .next()
        .map(|(_, t)| t.to_proto())
        .ok_or_else(|| GpuError::Device("internal: a forward pass without output".into()))?;
    Ok(pb::ForwardResponse {
        output: Some(output),
        dispatch_seq: out.dispatch_seq,
        queue_seconds: out.queue_seconds,
        device_seconds: out.device_seconds,
    })
}

pub fn forward_from_proto(r: pb::ForwardResponse, max_elements: usize) -> Result<WorkOutput> {
    let output = tensor(r.output.as_ref(), "output", max_elements)?;
    Ok(WorkOutput {
        tensors: vec![("output".into(), output)],
        loss: None,
        dispatch_seq: r.dispatch_seq,
        queue_seconds: r.queue_seconds,
        device_seconds: r.device_seconds,
    })
}

pub fn train_to_proto(out: WorkOutput) -> pb::TrainStepResponse {
    pb::TrainStepResponse {
        loss: out.loss.unwrap_or(f32::NAN),
        gradients: named(&out.tensors),
        dispatch_seq: out.dispatch_seq,
        queue_seconds: out.queue_seconds,
        device_seconds: out.device_seconds,
    }
}

pub fn train_from_proto(r: pb::TrainStepResponse, max_elements: usize) -> Result<WorkOutput> {
    Ok(WorkOutput {
        tensors: from_named(&r.gradients, max_elements)?,
        loss: Some(r.loss),
        dispatch_seq: r.dispatch_seq,
        queue_seconds: r.queue_seconds,
        device_seconds: r.device_seconds,
    })
}

pub fn stats_to_proto(s: &ExecutorStats) -> pb::StatsResponse {
    pb::StatsResponse {
        backend: s.backend.clone(),
        device: s.device.clone(),
        resident_weight_bytes: s.resident_weight_bytes,
        resident_tensors: s.resident_tensors,
        device_used_bytes: s.device_used_bytes,
        device_limit_bytes: s.device_limit_bytes,
        dispatched: s.dispatched,
        tenants: s
            .tenants
            .iter()
            .map(|t| pb::TenantStats {
                tenant_id: t.tenant_id,
                name: t.name.clone(),
                weight: t.weight,
                priority: priority_to_proto(t.priority) as i32,
                queued: t.queued,
                in_flight: t.in_flight,
                peak_in_flight: t.peak_in_flight,
                memory_used_bytes: t.memory_used_bytes,
                memory_quota_bytes: t.memory_quota_bytes,
                completed: t.completed,
                failed: t.failed,
                models: t.models,
            })
            .collect(),
    }
}

pub fn stats_from_proto(s: pb::StatsResponse) -> ExecutorStats {
    ExecutorStats {
        backend: s.backend,
        device: s.device,
        resident_weight_bytes: s.resident_weight_bytes,
        resident_tensors: s.resident_tensors,
        device_used_bytes: s.device_used_bytes,
        device_limit_bytes: s.device_limit_bytes,
        dispatched: s.dispatched,
        tenants: s
            .tenants
            .into_iter()
            .map(|t| TenantStats {
                tenant_id: t.tenant_id,
                name: t.name,
                weight: t.weight,
                priority: priority_from_proto(t.priority).unwrap_or_default(),
                queued: t.queued,
                in_flight: t.in_flight,
                peak_in_flight: t.peak_in_flight,
                memory_used_bytes: t.memory_used_bytes,
                memory_quota_bytes: t.memory_quota_bytes,
                completed: t.completed,
                failed: t.failed,
                models: t.models,
            })
            .collect(),
    }
}
