//! The management API (TorchServe's port 8081): list, describe, register, scale and
//! unregister models, in TorchServe's response shapes.

use std::sync::Arc;

use axum::Router;

use super::AppState;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new().with_state(state)
}
