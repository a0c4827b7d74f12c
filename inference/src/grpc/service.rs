//! The `GRPCInferenceService` implementation: each RPC translates between protobuf messages and
//! one [`InferBackend`] call.

use std::sync::Arc;

use cumulus_proto::inference as pb;
use pb::grpc_inference_service_server::GrpcInferenceService;
use tonic::{Request, Response, Status};

use super::status::{from_protocol, status_of};
use crate::protocol::grpc_conv::{
    model_metadata_to_grpc, repository_index_to_grpc, request_from_grpc, response_to_grpc,
    server_metadata_to_grpc,
};
use crate::protocol::{
    InferBackend, InferError, OutputSelection, check_model_name, check_version,
    validate::check_repository_parameters,
};

/// The service state: the backend every RPC calls.
pub struct InferenceService {
    backend: Arc<dyn InferBackend>,
}

impl InferenceService {
    /// The service over `backend` (see [`service`](super::service) for the limits-aware server).
    pub fn new(backend: Arc<dyn InferBackend>) -> Self {
        InferenceService { backend }
    }
}

impl std::fmt::Debug for InferenceService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceService").finish_non_exhaustive()
    }
}

/// Checks a model name and an optional version (empty: none) from a message.
fn model_ref(name: &str, version: &str) -> Result<Option<String>, Status> {
    check_model_name(name).map_err(from_protocol)?;
    if version.is_empty() {
        return Ok(None);
    }
    check_version(version).map_err(from_protocol)?;
    Ok(Some(version.to_owned()))
}

fn repository_parameter_keys(
    action: &str,
    parameters: &std::collections::HashMap<String, pb::ModelRepositoryParameter>,
    allowed: &[&str],
) -> Result<(), Status> {
    check_repository_parameters(action, parameters.keys().map(String::as_str), allowed)
        .map_err(from_protocol)
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    #[tracing::instrument(name = "kserve_grpc", skip_all, fields(rpc = "ServerLive"))]
    async fn server_live(
        &self,
        _request: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    #[tracing::instrument(name = "kserve_grpc", skip_all, fields(rpc = "ServerReady"))]
    async fn server_ready(
        &self,
        _request: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        let ready = self.backend.server_ready();
        Ok(Response::new(pb::ServerReadyResponse { ready }))
    }

    #[tracing::instrument(name = "kserve_grpc", skip_all, fields(rpc = "ModelReady"))]
    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let m = request.into_inner();
        let version = model_ref(&m.name, &m.version)?;
        let ready = self
            .backend
            .model_ready(&m.name, version.as_deref())
            .map_err(status_of)?;
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    #[tracing::instrument(name = "kserve_grpc", skip_all, fields(rpc = "ServerMetadata"))]
    async fn server_metadata(
        &self,
        _request: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        let meta = self.backend.server_metadata();
        Ok(Response::new(server_metadata_to_grpc(&meta)))
    }

    #[tracing::instrument(name = "kserve_grpc", skip_all, fields(rpc = "ModelMetadata"))]
    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let m = request.into_inner();
        let version = model_ref(&m.name, &m.version)?;
        let meta = self
            .backend
            .model_metadata(&m.name, version.as_deref())
            .map_err(status_of)?;
        Ok(Response::new(model_metadata_to_grpc(&meta)))
    }

    #[tracing::instrument(name = "kserve_grpc", skip_all, fields(rpc = "ModelInfer", model))]
    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let msg = request.into_inner();
        let version = model_ref(&msg.model_name, &msg.model_version)?;
        tracing::Span::current().record("model", msg.model_name.as_str());
        let (model, _, request) =
            request_from_grpc(msg, self.backend.limits()).map_err(from_protocol)?;
        let selection = OutputSelection::of(&request);
        let response = self
            .backend
            .infer(&model, version.as_deref(), request)
            .await
            .map_err(status_of)?;
        let response = selection
            .apply(response)
            .map_err(|e| status_of(InferError::Internal(e)))?;
        Ok(Response::new(
            response_to_grpc(response).map_err(status_of)?,
        ))
    }

    #[tracing::instrument(name = "kserve_grpc", skip_all, fields(rpc = "RepositoryIndex"))]
    async fn repository_index(
        &self,
        request: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        // One repository per server: `repository_name` has nothing to choose between.
        let entries = self.backend.repository_index(request.into_inner().ready);
        Ok(Response::new(repository_index_to_grpc(&entries)))
    }

    #[tracing::instrument(name = "kserve_grpc", skip_all, fields(rpc = "RepositoryModelLoad"))]
    async fn repository_model_load(
        &self,
        request: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        let m = request.into_inner();
        model_ref(&m.model_name, "")?;
        repository_parameter_keys("load", &m.parameters, &[])?;
        self.backend.load(&m.model_name).await.map_err(status_of)?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    #[tracing::instrument(name = "kserve_grpc", skip_all, fields(rpc = "RepositoryModelUnload"))]
    async fn repository_model_unload(
        &self,
        request: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        let m = request.into_inner();
        model_ref(&m.model_name, "")?;
        repository_parameter_keys("unload", &m.parameters, &["unload_dependents"])?;
        self.backend
            .unload(&m.model_name)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }
}
