//! KServe's Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, from
//! the vendored `proto/open_inference_grpc.proto`): ServerLive, ServerReady,
//! ModelReady, ServerMetadata, ModelMetadata and ModelInfer, as `tritonclient.grpc` and
//! KServe's own clients call them.
//!
//! ModelInfer takes the same tensors as the REST `/v2/models/{m}/infer` (a BYTES prompt
//! tensor, an optional `negative_prompt`, the JSON parameter names as request
//! `parameters`; see [`oip`](super::oip)), typed (`contents.bytes_contents`) or raw
//! (`raw_input_contents`), and answers the UINT8 `image` tensor in
//! `raw_output_contents`, which is where tritonclient reads it. Jobs go through the same
//! queue ([`run_job`]), with the same metrics, token auth and size limits
//! (`max_request_size` for the request message, `max_response_size` for the reply).
//! Errors are gRPC statuses ([`status`]).
//!
//! The service is an axum router served on its own address by `listen` over HTTP/2
//! (h2c, or TLS with ALPN `h2`).

mod convert;
mod status;

/// The code generated from the proto (`build.rs`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("inference");
}

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use tonic::Status;

use super::AppState;
use super::auth::bearer_matches;
use super::error::{ApiError, ErrorKind};
use super::oip;
use super::queue::{find_model, run_job};
use super::registry::ModelEntry;
use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use pb::*;

/// The service's path prefix (`/package.Service/Method`).
const SERVICE_PATH: &str = "/inference.GRPCInferenceService/";
/// Methods answered without a token, as `/v2/health/*` on REST.
const OPEN_METHODS: [&str; 2] = ["ServerLive", "ServerReady"];
/// Room for the reply's own fields beyond the image bytes when sizing the encoder.
const REPLY_SLACK: usize = 64 * 1024;

/// The gRPC address's router: the service behind token auth.
pub(crate) fn router(state: Arc<AppState>) -> axum::Router {
    let limits = (
        state.config.max_request_size,
        state.config.max_response_size.saturating_add(REPLY_SLACK),
    );
    let service = GrpcInferenceServiceServer::new(Inference {
        state: state.clone(),
    })
    .max_decoding_message_size(limits.0)
    .max_encoding_message_size(limits.1);
    tonic::service::Routes::new(service)
        .into_axum_router()
        .layer(middleware::from_fn_with_state(state, require_token))
        .layer(middleware::map_response(status::too_large_as_exhausted))
}

/// UNAUTHENTICATED unless the call carries `authorization: Bearer TOKEN` (when the
/// server has a token); the health methods stay open.
async fn require_token(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(token) = state.config.auth_token.as_deref() else {
        return next.run(req).await;
    };
    let method = req.uri().path().strip_prefix(SERVICE_PATH).unwrap_or("");
    let header = req.headers().get(axum::http::header::AUTHORIZATION);
    if OPEN_METHODS.contains(&method) || bearer_matches(header, token) {
        return next.run(req).await;
    }
    let status = Status::unauthenticated(
        "Token Authorization failed. Token either incorrect, expired, or not provided correctly",
    );
    status.into_http::<axum::body::Body>()
}

struct Inference {
    state: Arc<AppState>,
}

type Reply<T> = Result<tonic::Response<T>, Status>;

fn ok<T>(t: T) -> Reply<T> {
    Ok(tonic::Response::new(t))
}

/// The model, checking the version when the request names one.
fn model_version(state: &AppState, name: &str, version: &str) -> Result<Arc<ModelEntry>, ApiError> {
    let entry = find_model(state, name)?;
    if !version.is_empty() && version != entry.version {
        return Err(ApiError::new(
            ErrorKind::ModelVersionNotFound,
            format!(
                "Model {name} has no version {version} (it has {})",
                entry.version
            ),
        ));
    }
    Ok(entry)
}

fn tensors(list: &[(&str, &str, &[i64])]) -> Vec<model_metadata_response::TensorMetadata> {
    list.iter()
        .map(
            |(name, datatype, shape)| model_metadata_response::TensorMetadata {
                name: name.to_string(),
                datatype: datatype.to_string(),
                shape: shape.to_vec(),
            },
        )
        .collect()
}

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(&self, _: tonic::Request<ServerLiveRequest>) -> Reply<ServerLiveResponse> {
        ok(ServerLiveResponse { live: true })
    }

    async fn server_ready(
        &self,
        _: tonic::Request<ServerReadyRequest>,
    ) -> Reply<ServerReadyResponse> {
        let models = self.state.registry.list();
        let ready = !models.is_empty() && models.iter().all(|m| m.worker.is_alive());
        ok(ServerReadyResponse { ready })
    }

    async fn model_ready(
        &self,
        req: tonic::Request<ModelReadyRequest>,
    ) -> Reply<ModelReadyResponse> {
        let req = req.into_inner();
        let entry = model_version(&self.state, &req.name, &req.version).map_err(status::status)?;
        ok(ModelReadyResponse {
            ready: entry.worker.is_alive(),
        })
    }

    async fn server_metadata(
        &self,
        _: tonic::Request<ServerMetadataRequest>,
    ) -> Reply<ServerMetadataResponse> {
        ok(ServerMetadataResponse {
            name: "wgsd".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: oip::EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        })
    }

    async fn model_metadata(
        &self,
        req: tonic::Request<ModelMetadataRequest>,
    ) -> Reply<ModelMetadataResponse> {
        let req = req.into_inner();
        let entry = model_version(&self.state, &req.name, &req.version).map_err(status::status)?;
        ok(ModelMetadataResponse {
            name: entry.name.clone(),
            versions: vec![entry.version.clone()],
            platform: oip::PLATFORM.into(),
            inputs: tensors(&oip::INPUTS),
            outputs: tensors(&oip::OUTPUTS),
            properties: Default::default(),
        })
    }

    async fn model_infer(
        &self,
        req: tonic::Request<ModelInferRequest>,
    ) -> Reply<ModelInferResponse> {
        let request_id = req
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let msg = req.into_inner();
        let state = &self.state;
        let entry =
            model_version(state, &msg.model_name, &msg.model_version).map_err(status::status)?;
        let result = infer(state, &entry, msg, request_id).await;
        // Counted like the REST routes, under the HTTP status of the same error.
        let code = match &result {
            Ok(_) => 200,
            Err(e) => e.status().as_u16(),
        };
        state
            .metrics
            .request_done(&entry.name, &entry.version, code);
        result.map(tonic::Response::new).map_err(status::status)
    }
}

/// One ModelInfer call on `entry`'s worker.
async fn infer(
    state: &AppState,
    entry: &ModelEntry,
    msg: ModelInferRequest,
    request_id: Option<String>,
) -> Result<ModelInferResponse, ApiError> {
    convert::check_outputs(&msg.outputs)?;
    let inputs = convert::inputs(&msg.inputs, &msg.raw_input_contents)?;
    let parameters = convert::parameters(&msg.parameters)?;
    let (request, one) = oip::generate_request(&state.defaults(entry), inputs, parameters)?;
    let limit = state.config.max_response_size;
    super::reply::check_size(oip::image_bytes(&request), limit)?;
    let id = if msg.id.is_empty() {
        request_id.clone().unwrap_or_default()
    } else {
        msg.id
    };
    let generated = run_job(state, entry, request, request_id.as_deref()).await?;
    let shape = oip::image_shape(&generated.images, one);
    let raw: Vec<u8> = generated.images.into_iter().flat_map(|i| i.data).collect();
    let reply = ModelInferResponse {
        model_name: entry.name.clone(),
        model_version: entry.version.clone(),
        id,
        parameters: Default::default(),
        outputs: vec![model_infer_response::InferOutputTensor {
            name: oip::IMAGE_OUTPUT.into(),
            datatype: "UINT8".into(),
            shape: shape.iter().map(|&d| d as i64).collect(),
            parameters: Default::default(),
            contents: None,
        }],
        raw_output_contents: vec![raw],
    };
    super::reply::check_size(prost::Message::encoded_len(&reply), limit)?;
    Ok(reply)
}
