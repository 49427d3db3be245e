//! The key layers in front of the operator routes, beside the client-key
//! [`ApiKeyLayer`](crate::layers::ApiKeyLayer) of the `/v1` routes:
//!
//! - [`AdminKeyLayer`]: `ADMIN_API_KEY` on `/admin/*` (403 `admin_disabled` when no admin key
//!   is set, 401 for a wrong or missing one); with [`AdminKeyLayer::or_client_keys`] the admin
//!   key or a client key (`/health/accounts`, which the dashboard reads with the admin key);
//! - [`MetricsAccessLayer`]: who may read `/metrics` ([`MetricsAccess`]: anyone on a loopback
//!   bind or with `metrics_public`, only the bearer of `METRICS_API_KEY`, or nobody).
//!
//! Every key is compared the one way [`presents_key`] compares (SHA-256 digests in constant
//! time, the key read from `Authorization: Bearer`, `x-api-key` or `api-key`). A refusal is an
//! `Err(GatewayError)` for the [`DialectLayer`](crate::layers::DialectLayer) above to render;
//! the bundled router puts these layers under `DialectLayer::new(Dialect::OpenAi)`.
//!
//! ```
//! use kiro_gateway::body::Body;
//! use kiro_gateway::server::AdminKeyLayer;
//! use tower::{Layer, ServiceExt};
//!
//! use futures_util::FutureExt;
//!
//! let ok = tower::service_fn(|_req: http::Request<Body>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
//! });
//! let svc = AdminKeyLayer::from_key("admin-secret").layer(ok);
//! let req = http::Request::get("/admin/stats")
//!     .header("authorization", "Bearer admin-secret")
//!     .body(Body::empty())
//!     .unwrap();
//! assert_eq!(svc.clone().oneshot(req).now_or_never().unwrap().unwrap().status(), 200);
//! let req = http::Request::get("/admin/stats").body(Body::empty()).unwrap();
//! assert_eq!(svc.oneshot(req).now_or_never().unwrap().unwrap_err().status(), 401);
//! ```

use std::task::{Context, Poll};

use http::{Request, Response};
use sha2::{Digest, Sha256};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::Body;
use crate::config::MetricsAccess;
use crate::error::{ErrorKind, GatewayError};
use crate::layers::auth::presents_key;
use crate::layers::future::ResponseFuture;
use crate::layers::ApiKeyLayer;

/// See the module docs.
#[derive(Clone)]
pub struct AdminKeyLayer {
    /// SHA-256 of `ADMIN_API_KEY` (`None`: no admin key, the admin routes are off).
    digest: Option<[u8; 32]>,
    /// Client keys that pass too (`None`: only the admin key).
    clients: Option<ApiKeyLayer>,
}

impl std::fmt::Debug for AdminKeyLayer {
    /// Whether a key is set; never its digest.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminKeyLayer")
            .field("configured", &self.digest.is_some())
            .field("or_client_keys", &self.clients.is_some())
            .finish()
    }
}

impl AdminKeyLayer {
    /// The admin key by its SHA-256 (as [`ValidConfig::admin_key`](crate::config::ValidConfig)
    /// holds it); `None`: the routes behind the layer answer 403.
    pub fn new(digest: Option<[u8; 32]>) -> Self {
        AdminKeyLayer {
            digest,
            clients: None,
        }
    }

    /// The admin key in clear text.
    pub fn from_key(key: &str) -> Self {
        Self::new(Some(Sha256::digest(key.as_bytes()).into()))
    }

    /// Let a valid client key through as well (no rate limit taken). With neither an admin
    /// key nor client keys configured, everything passes, as the client-key routes do.
    pub fn or_client_keys(mut self, keys: ApiKeyLayer) -> Self {
        self.clients = Some(keys);
        self
    }

    /// Whether an admin key is set.
    pub fn is_configured(&self) -> bool {
        self.digest.is_some()
    }

    /// Whether these headers present the admin key (`false` when none is set).
    pub fn is_admin(&self, headers: &http::HeaderMap) -> bool {
        self.digest
            .as_ref()
            .is_some_and(|d| presents_key(headers, d))
    }

    /// `Ok` when the request may pass, else the refusal.
    fn check<B>(&self, req: &Request<B>) -> Result<(), GatewayError> {
        let admin = self.is_admin(req.headers());
        match &self.clients {
            Some(keys) => {
                // both compared, whichever matches
                let client = keys.accepts(req);
                if admin | client {
                    Ok(())
                } else {
                    Err(GatewayError::unauthorized(
                        "Invalid or missing API key. Use Authorization: Bearer <key>.",
                    ))
                }
            }
            None if self.digest.is_none() => Err(GatewayError::new(
                ErrorKind::Permission,
                "the admin routes are off: set ADMIN_API_KEY, then send it as Authorization: Bearer <key>",
            )
            .with_code("admin_disabled")),
            None if admin => Ok(()),
            None => Err(GatewayError::unauthorized(
                "the admin routes need Authorization: Bearer <ADMIN_API_KEY>",
            )),
        }
    }
}

impl<S> Layer<S> for AdminKeyLayer {
    type Service = AdminKeyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdminKeyService {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`AdminKeyLayer`].
#[derive(Clone, Debug)]
pub struct AdminKeyService<S> {
    inner: S,
    layer: AdminKeyLayer,
}

impl<S> AdminKeyService<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for AdminKeyService<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Error: Into<GatewayError>,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.layer.check(&req) {
            Ok(()) => ResponseFuture::inner(self.inner.call(req)),
            Err(e) => {
                tracing::info!(path = %req.uri().path(), "rejected an operator request without the admin key");
                ResponseFuture::rejected(e)
            }
        }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct MetricsAccessLayer {
    access: MetricsAccess,
}

impl MetricsAccessLayer {
    /// Let through whom `access` names.
    pub fn new(access: MetricsAccess) -> Self {
        MetricsAccessLayer { access }
    }

    /// `Ok` when the request may read the metrics, else the refusal.
    fn check(&self, headers: &http::HeaderMap) -> Result<(), GatewayError> {
        match &self.access {
            MetricsAccess::Open => Ok(()),
            MetricsAccess::Key(digest) if presents_key(headers, digest) => Ok(()),
            MetricsAccess::Key(_) => Err(GatewayError::unauthorized(
                "/metrics needs Authorization: Bearer <METRICS_API_KEY>",
            )),
            MetricsAccess::Off => Err(GatewayError::new(
                ErrorKind::Permission,
                "/metrics is off on a non-loopback address: set METRICS_API_KEY (then send it as a bearer) or metrics_public = true",
            )
            .with_code("metrics_disabled")),
        }
    }
}

impl<S> Layer<S> for MetricsAccessLayer {
    type Service = MetricsAccessService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsAccessService {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`MetricsAccessLayer`].
#[derive(Clone, Debug)]
pub struct MetricsAccessService<S> {
    inner: S,
    layer: MetricsAccessLayer,
}

impl<S> MetricsAccessService<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for MetricsAccessService<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Error: Into<GatewayError>,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.layer.check(req.headers()) {
            Ok(()) => ResponseFuture::inner(self.inner.call(req)),
            Err(e) => ResponseFuture::rejected(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::Dialect;
    use crate::layers::DialectLayer;
    use tower::ServiceExt;

    /// What the layers wrap: answers 200 `{"ok":true}`.
    fn ok(
    ) -> impl Service<Request<Body>, Response = Response<Body>, Error = std::convert::Infallible> + Clone
    {
        tower::service_fn(|_: Request<Body>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Body::from("{\"ok\":true}")))
        })
    }

    /// Status and JSON body of one request through `svc` under the OpenAI dialect layer, as
    /// the bundled router stacks it.
    async fn answer<S>(svc: S, headers: &[(&str, &str)]) -> (u16, serde_json::Value)
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>,
    {
        let svc = DialectLayer::new(Dialect::OpenAi).layer(svc);
        let mut req = Request::get("/admin/stats");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = svc.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn admin_key_passes_and_a_wrong_or_missing_one_is_a_401_in_openai_shape() {
        let l = AdminKeyLayer::from_key("adm");
        assert_eq!(
            answer(l.clone().layer(ok()), &[("authorization", "Bearer adm")])
                .await
                .0,
            200
        );
        assert_eq!(
            answer(l.clone().layer(ok()), &[("x-api-key", "adm")])
                .await
                .0,
            200
        );
        for h in [&[("authorization", "Bearer nope")][..], &[]] {
            let (s, v) = answer(l.clone().layer(ok()), h).await;
            assert_eq!(s, 401);
            assert_eq!(v["error"]["type"], "authentication_error");
            assert_eq!(v["error"]["code"], "invalid_api_key");
            assert_eq!(
                v["error"]["message"],
                "the admin routes need Authorization: Bearer <ADMIN_API_KEY>"
            );
        }
    }

    #[tokio::test]
    async fn without_an_admin_key_the_admin_routes_are_a_403_admin_disabled() {
        let (s, v) = answer(
            AdminKeyLayer::new(None).layer(ok()),
            &[("authorization", "Bearer x")],
        )
        .await;
        assert_eq!(s, 403);
        assert_eq!(v["error"]["code"], "admin_disabled");
        assert_eq!(v["error"]["type"], "permission_error");
    }

    #[tokio::test]
    async fn or_client_keys_takes_either_key_and_words_the_refusal_for_clients() {
        let l = AdminKeyLayer::from_key("adm").or_client_keys(ApiKeyLayer::new(["client"]));
        assert_eq!(
            answer(l.clone().layer(ok()), &[("authorization", "Bearer adm")])
                .await
                .0,
            200
        );
        assert_eq!(
            answer(l.clone().layer(ok()), &[("x-api-key", "client")])
                .await
                .0,
            200
        );
        let (s, v) = answer(l.layer(ok()), &[("x-api-key", "other")]).await;
        assert_eq!(s, 401);
        assert_eq!(
            v["error"]["message"],
            "Invalid or missing API key. Use Authorization: Bearer <key>."
        );
        // no admin key and no client keys: open, as the client-key routes are
        let open = AdminKeyLayer::new(None).or_client_keys(ApiKeyLayer::new(Vec::<String>::new()));
        assert_eq!(answer(open.layer(ok()), &[]).await.0, 200);
    }

    #[tokio::test]
    async fn metrics_access_follows_open_key_and_off() {
        assert_eq!(
            answer(
                MetricsAccessLayer::new(MetricsAccess::Open).layer(ok()),
                &[]
            )
            .await
            .0,
            200
        );
        let keyed = MetricsAccessLayer::new(MetricsAccess::Key(Sha256::digest(b"m").into()));
        assert_eq!(
            answer(keyed.clone().layer(ok()), &[("authorization", "Bearer m")])
                .await
                .0,
            200
        );
        let (s, v) = answer(keyed.layer(ok()), &[("authorization", "Bearer x")]).await;
        assert_eq!(s, 401);
        assert_eq!(
            v["error"]["message"],
            "/metrics needs Authorization: Bearer <METRICS_API_KEY>"
        );
        let (s, v) = answer(
            MetricsAccessLayer::new(MetricsAccess::Off).layer(ok()),
            &[("authorization", "Bearer m")],
        )
        .await;
        assert_eq!(s, 403);
        assert_eq!(v["error"]["code"], "metrics_disabled");
    }

    #[test]
    fn debug_never_shows_the_digest() {
        let l = AdminKeyLayer::from_key("adm");
        let shown = format!("{l:?}");
        assert!(shown.contains("configured: true"), "{shown}");
        let hex: String = Sha256::digest(b"adm")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!shown.contains(&hex[..8]));
    }
}
