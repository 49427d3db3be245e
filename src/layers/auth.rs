//! `ApiKeyLayer`: the client must present the gateway's key, as `Authorization: Bearer <key>`,
//! `x-api-key: <key>` or `api-key: <key>` (any one that carries a value), on every route it is
//! mounted on. Keys are compared in constant time (over SHA-256 digests, so not even the length
//! leaks), before any body is read. A failure is a 401 in the request's dialect.
//!
//! With no key configured the layer lets everything through (the server refuses to bind a
//! non-loopback address in that case).
//!
//! ```
//! use kiro_gateway::layers::ApiKeyLayer;
//! use kiro_gateway::api::Body;
//! use tower::{Layer, ServiceExt};
//!
//! # tokio_test_block_on(async {
//! let svc = ApiKeyLayer::new(["sekret"]).layer(tower::service_fn(|_req: http::Request<Body>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
//! }));
//! let req = http::Request::get("/v1/models").header("x-api-key", "sekret").body(Body::empty()).unwrap();
//! assert_eq!(svc.clone().oneshot(req).await.unwrap().status(), 200);
//! let req = http::Request::get("/v1/models").body(Body::empty()).unwrap();
//! assert_eq!(svc.oneshot(req).await.unwrap().status(), 401);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_layer::Layer;
use tower_service::Service;

use super::future::ResponseFuture;
use crate::api::{Body, Dialect};
use crate::error::GatewayError;

/// See the module docs.
#[derive(Clone)]
pub struct ApiKeyLayer {
    keys: Arc<Vec<[u8; 32]>>,
}

impl ApiKeyLayer {
    /// Accept any of these keys (empty strings are ignored; no keys: no check).
    pub fn new<I, K>(keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: AsRef<str>,
    {
        let keys = keys
            .into_iter()
            .filter(|k| !k.as_ref().is_empty())
            .map(|k| Sha256::digest(k.as_ref().as_bytes()).into())
            .collect();
        ApiKeyLayer {
            keys: Arc::new(keys),
        }
    }

    /// Whether any key is configured.
    pub fn is_enabled(&self) -> bool {
        !self.keys.is_empty()
    }
}

impl<S> Layer<S> for ApiKeyLayer {
    type Service = ApiKeyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiKeyService {
            inner,
            keys: self.keys.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ApiKeyService<S> {
    inner: S,
    keys: Arc<Vec<[u8; 32]>>,
}

fn presented<B>(req: &Request<B>) -> impl Iterator<Item = &[u8]> {
    let h = req.headers();
    let bearer = h.get(http::header::AUTHORIZATION).and_then(|v| {
        let b = v.as_bytes();
        (b.len() > 7 && b[..7].eq_ignore_ascii_case(b"bearer ")).then(|| &b[7..])
    });
    let x_api = h.get("x-api-key").map(|v| v.as_bytes());
    let api = h.get("api-key").map(|v| v.as_bytes());
    [bearer, x_api, api]
        .into_iter()
        .flatten()
        .map(|b| b.trim_ascii())
        .filter(|b| !b.is_empty())
}

impl<S> ApiKeyService<S> {
    fn allowed<B>(&self, req: &Request<B>) -> bool {
        if self.keys.is_empty() {
            return true;
        }
        let mut ok = subtle::Choice::from(0u8);
        for candidate in presented(req) {
            let digest: [u8; 32] = Sha256::digest(candidate).into();
            for k in self.keys.iter() {
                ok |= k.ct_eq(&digest);
            }
        }
        ok.into()
    }
}

impl<S, B> Service<Request<B>> for ApiKeyService<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if self.allowed(&req) {
            ResponseFuture::inner(self.inner.call(req))
        } else {
            let dialect = Dialect::of(&req);
            let err = GatewayError::unauthorized(match dialect {
                Dialect::Anthropic => {
                    "Invalid or missing API key. Use the x-api-key header or Authorization: Bearer."
                }
                Dialect::OpenAi => "Invalid or missing API key. Use Authorization: Bearer <key>.",
            });
            tracing::info!(path = %req.uri().path(), "rejected a request without a valid API key");
            ResponseFuture::rejected(dialect.error_response(&err))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn status(
        layer: &ApiKeyLayer,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, serde_json::Value) {
        let svc = layer.layer(tower::service_fn(|_r: Request<Body>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
        }));
        let mut req = Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = svc.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn accepts_bearer_or_x_api_key_on_every_route() {
        let l = ApiKeyLayer::new(["k1"]);
        for path in ["/v1/models", "/v1/chat/completions", "/v1/messages"] {
            assert_eq!(
                status(&l, path, &[("authorization", "Bearer k1")]).await.0,
                200
            );
            assert_eq!(status(&l, path, &[("x-api-key", "k1")]).await.0, 200);
            // Claude Code may send both, one of them stale
            assert_eq!(
                status(
                    &l,
                    path,
                    &[("authorization", "Bearer old"), ("x-api-key", "k1")]
                )
                .await
                .0,
                200
            );
        }
    }

    #[tokio::test]
    async fn rejects_missing_or_wrong_keys_in_the_dialect_shape() {
        let l = ApiKeyLayer::new(["k1"]);
        let (s, v) = status(
            &l,
            "/v1/chat/completions",
            &[("authorization", "Bearer k2")],
        )
        .await;
        assert_eq!(s, 401);
        assert_eq!(v["error"]["type"], "authentication_error");
        assert_eq!(v["error"]["code"], "invalid_api_key");
        let (s, v) = status(&l, "/v1/messages", &[]).await;
        assert_eq!(s, 401);
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "authentication_error");
        let (s, _) = status(&l, "/v1/models", &[("x-api-key", "k1x")]).await;
        assert_eq!(s, 401);
    }

    #[tokio::test]
    async fn no_configured_key_means_no_check() {
        let l = ApiKeyLayer::new(Vec::<String>::new());
        assert!(!l.is_enabled());
        assert_eq!(status(&l, "/v1/models", &[]).await.0, 200);
    }
}
