//! `ModelNameLayer`: resolves the model the client asked for to a Kiro model id (see
//! [`crate::models`]) and puts a [`ResolvedModel`] into the request extensions. An unknown
//! name is a 400 in the request's dialect that lists the closest known names (or, when the
//! catalogue is configured to, it is passed through unchanged).

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::future::ResponseFuture;
use crate::api::Body;
use crate::error::GatewayError;
pub use crate::models::{ModelCatalog, ResolvedModel};

/// A parsed request that names a model.
pub trait ModelRequest {
    /// The model name as the client sent it.
    fn model(&self) -> &str;
}

impl ModelRequest for crate::api::responses::ResponsesRequest {
    fn model(&self) -> &str {
        &self.model
    }
}

impl ModelRequest for crate::api::anthropic::MessagesRequest {
    fn model(&self) -> &str {
        &self.model
    }
}

impl ModelRequest for crate::api::openai::ChatCompletionRequest {
    fn model(&self) -> &str {
        &self.model
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct ModelNameLayer {
    catalog: Arc<ModelCatalog>,
}

impl ModelNameLayer {
    /// Resolve names with `catalog` (shared with `/v1/models` and the catalogue refresh).
    pub fn new(catalog: Arc<ModelCatalog>) -> Self {
        ModelNameLayer { catalog }
    }
}

impl<S> Layer<S> for ModelNameLayer {
    type Service = ModelNameService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ModelNameService {
            inner,
            catalog: self.catalog.clone(),
        }
    }
}

/// The service of [`ModelNameLayer`]: resolves the model, then calls `S`.
#[derive(Debug, Clone)]
pub struct ModelNameService<S> {
    inner: S,
    catalog: Arc<ModelCatalog>,
}

impl<S> ModelNameService<S> {
    inner_service_accessors!();
}

impl<S, T> Service<Request<T>> for ModelNameService<S>
where
    S: Service<Request<T>, Response = Response<Body>>,
    S::Error: Into<GatewayError>,
    T: ModelRequest,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<T>) -> Self::Future {
        match self.catalog.resolve(req.body().model()) {
            Ok(resolved) => {
                tracing::debug!(requested = %resolved.requested, kiro_id = %resolved.kiro_id, "model resolved");
                req.extensions_mut().insert(resolved);
                ResponseFuture::inner(self.inner.call(req))
            }
            Err(close) => {
                let name = req.body().model();
                let hint = if close.is_empty() {
                    String::new()
                } else {
                    format!(" Did you mean: {}?", close.join(", "))
                };
                let err = GatewayError::invalid_request(format!(
                    "The model {name:?} is not available through this Kiro account.{hint} GET /v1/models lists the models."
                ))
                .with_param("model")
                .with_code("model_not_found");
                ResponseFuture::rejected(err)
            }
        }
    }
}
