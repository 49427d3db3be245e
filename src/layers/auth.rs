//! `ApiKeyLayer`: the client must present the gateway's key, as `Authorization: Bearer <key>`,
//! `x-api-key: <key>` or `api-key: <key>` (any one that carries a value), on every route it is
//! mounted on. Keys are compared in constant time (over SHA-256 digests, so not even the length
//! leaks), before any body is read. A failure is an `Err` 401 (a 429 past a key's rate limit),
//! which the [`DialectLayer`](super::DialectLayer) above renders in the request's dialect.
//!
//! Keys have names ([`ClientKey`]; `PROXY_API_KEY` is [`DEFAULT_CLIENT`], the `[[api_keys]]`
//! tables of `config.toml` name theirs): the matched key's name goes into the request
//! extensions ([`ClientName`]), the metrics record (the `client` label) and a `client` span
//! around the rest of the request, never the key itself. A key may carry a rate limit
//! (`rate_limit_per_minute`); past it the answer is a 429 with `Retry-After`, and nothing is
//! sent upstream. The buckets sit behind [`BucketStore`] ([`MemoryBucketStore`] by default;
//! [`ApiKeyLayer::with_bucket_store`]), so that gateways can share one limit per client.
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
//! assert_eq!(svc.oneshot(req).await.unwrap_err().status(), 401);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{Request, Response};
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

use super::future::ResponseFuture;
use super::metrics::RequestRecord;
use crate::api::{Body, Dialect};
use crate::error::{ErrorKind, GatewayError};

/// The name `PROXY_API_KEY` (and keys given to [`ApiKeyLayer::new`]) go by.
pub const DEFAULT_CLIENT: &str = "default";

/// A client key: a name (for metrics and logs) and the SHA-256 digest of the key, with an
/// optional rate limit.
#[derive(Clone)]
pub struct ClientKey {
    name: Arc<str>,
    digest: [u8; 32],
    rate_limit_per_minute: Option<u32>,
}

impl std::fmt::Debug for ClientKey {
    /// The name and the limit; never the digest.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("name", &self.name)
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .finish_non_exhaustive()
    }
}

impl ClientKey {
    /// A key given in clear text.
    pub fn new(name: impl Into<Arc<str>>, key: &str) -> Self {
        ClientKey {
            name: name.into(),
            digest: Sha256::digest(key.as_bytes()).into(),
            rate_limit_per_minute: None,
        }
    }

    /// A key given as the hex SHA-256 of its text (64 hex digits, any case).
    pub fn from_sha256(name: impl Into<Arc<str>>, hex: &str) -> Result<Self, String> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return Err(format!(
                "sha256 must be 64 hex digits, not {} characters",
                hex.len()
            ));
        }
        let mut digest = [0u8; 32];
        for (i, byte) in digest.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| "sha256 must be 64 hex digits".to_owned())?;
        }
        Ok(ClientKey {
            name: name.into(),
            digest,
            rate_limit_per_minute: None,
        })
    }

    /// At most `n` requests a minute (a token bucket: bursts of up to `n`, refilled evenly).
    pub fn with_rate_limit_per_minute(mut self, n: u32) -> Self {
        self.rate_limit_per_minute = (n > 0).then_some(n);
        self
    }

    /// The key's name (the `client` label, the [`ClientName`] extension); never the key.
    pub fn name(&self) -> &str {
        &self.name
    }
}

pub use crate::context::ClientName;

/// Where the rate-limit buckets of the client keys live, one per client name.
///
/// The in-memory [`MemoryBucketStore`] is the default. A store shared by several gateways
/// (issue 21) must guarantee:
/// - **atomic take-a-token**: refilling the bucket for the time passed, checking it holds a
///   whole token and taking it are one step (e.g. one Lua script in Redis), so that two
///   gateways can never both take the last token;
/// - **the same bucket**: capacity `per_minute`, full at first use, refilled evenly at
///   `per_minute / 60` tokens a second, one bucket per client name whatever gateway asks;
/// - **an honest wait**: a refusal carries the whole seconds until a token is back (the
///   `Retry-After` the client gets), at least 1;
/// - **no blocking**: it runs before every request of a limited key.
pub trait BucketStore: Send + Sync {
    /// Take one token from `client`'s bucket of `per_minute`: `Ok`, or `Err(seconds)` until
    /// one is back.
    fn take(&self, client: &str, per_minute: u32) -> Result<(), u64>;
}

/// Token buckets in this process's memory (the default).
#[derive(Debug, Default)]
pub struct MemoryBucketStore {
    /// Client name → (tokens, last refill).
    buckets: Mutex<HashMap<Arc<str>, (f64, tokio::time::Instant)>>,
}

impl BucketStore for MemoryBucketStore {
    fn take(&self, client: &str, per_minute: u32) -> Result<(), u64> {
        let rate = f64::from(per_minute) / 60.0;
        let now = tokio::time::Instant::now();
        let mut buckets = crate::lock(&self.buckets);
        let s = match buckets.get_mut(client) {
            Some(s) => s,
            None => buckets
                .entry(Arc::from(client))
                .or_insert((f64::from(per_minute), now)),
        };
        let refill = now.duration_since(s.1).as_secs_f64() * rate;
        s.0 = (s.0 + refill).min(f64::from(per_minute));
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - s.0) / rate).ceil() as u64).max(1))
        }
    }
}

#[derive(Clone)]
struct Entry {
    key: ClientKey,
    /// Where its rate limit's bucket is (used only when the key has a limit).
    buckets: Arc<dyn BucketStore>,
}

/// See the module docs.
#[derive(Clone)]
pub struct ApiKeyLayer {
    keys: Arc<Vec<Entry>>,
}

/// The configured keys as their names and limits: never a key or its digest.
struct KeyNames<'a>(&'a [Entry]);

impl std::fmt::Debug for KeyNames<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|e| &e.key))
            .finish()
    }
}

impl std::fmt::Debug for ApiKeyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyLayer")
            .field("keys", &KeyNames(&self.keys))
            .finish()
    }
}

impl ApiKeyLayer {
    /// Accept any of these keys, all named [`DEFAULT_CLIENT`] (empty strings are ignored; no
    /// keys: no check).
    pub fn new<I, K>(keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: AsRef<str>,
    {
        let name: Arc<str> = Arc::from(DEFAULT_CLIENT);
        Self::with_clients(
            keys.into_iter()
                .filter(|k| !k.as_ref().is_empty())
                .map(|k| ClientKey::new(name.clone(), k.as_ref())),
        )
    }

    /// Accept these named keys (no keys: no check).
    pub fn with_clients(keys: impl IntoIterator<Item = ClientKey>) -> Self {
        let buckets: Arc<dyn BucketStore> = Arc::new(MemoryBucketStore::default());
        let keys = keys
            .into_iter()
            .map(|key| Entry {
                key,
                buckets: buckets.clone(),
            })
            .collect();
        ApiKeyLayer {
            keys: Arc::new(keys),
        }
    }

    /// Keep the keys' rate-limit buckets in `store` (see [`BucketStore`] for what a shared
    /// store must guarantee).
    pub fn with_bucket_store(self, store: Arc<dyn BucketStore>) -> Self {
        let keys = self
            .keys
            .iter()
            .map(|e| Entry {
                key: e.key.clone(),
                buckets: store.clone(),
            })
            .collect();
        ApiKeyLayer {
            keys: Arc::new(keys),
        }
    }

    /// Whether any key is configured.
    pub fn is_enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Whether the request carries a valid key (or no key is needed), without taking from any
    /// rate limit: for answers given before the stack, which checks again.
    pub fn accepts<B>(&self, req: &Request<B>) -> bool {
        !matches!(check(&self.keys, req), Verdict::Refused)
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

/// The service of [`ApiKeyLayer`]: checks the key, then calls `S`.
#[derive(Clone)]
pub struct ApiKeyService<S> {
    inner: S,
    keys: Arc<Vec<Entry>>,
}

impl<S> ApiKeyService<S> {
    inner_service_accessors!();
}

impl<S: std::fmt::Debug> std::fmt::Debug for ApiKeyService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyService")
            .field("inner", &self.inner)
            .field("keys", &KeyNames(&self.keys))
            .finish()
    }
}

/// The token of an `Authorization: Bearer <token>` header (untrimmed), if there is one.
pub fn bearer(h: &http::HeaderMap) -> Option<&[u8]> {
    h.get(http::header::AUTHORIZATION).and_then(|v| {
        let b = v.as_bytes();
        (b.len() > 7 && b[..7].eq_ignore_ascii_case(b"bearer ")).then(|| &b[7..])
    })
}

fn presented(h: &http::HeaderMap) -> impl Iterator<Item = &[u8]> {
    let bearer = bearer(h);
    let x_api = h.get("x-api-key").map(|v| v.as_bytes());
    let api = h.get("api-key").map(|v| v.as_bytes());
    [bearer, x_api, api]
        .into_iter()
        .flatten()
        .map(|b| b.trim_ascii())
        .filter(|b| !b.is_empty())
}

/// What the key check decided.
enum Verdict<'a> {
    /// No keys configured.
    Open,
    Client(&'a Entry),
    Refused,
}

/// The matching key, found in constant time: every presented value is compared with every
/// configured key, and the match is selected without branching on the digests.
fn check<'a, B>(keys: &'a [Entry], req: &Request<B>) -> Verdict<'a> {
    if keys.is_empty() {
        return Verdict::Open;
    }
    let mut found = subtle::Choice::from(0u8);
    let mut index = 0u32;
    for candidate in presented(req.headers()) {
        let digest: [u8; 32] = Sha256::digest(candidate).into();
        for (i, e) in keys.iter().enumerate() {
            let eq = e.key.digest.ct_eq(&digest);
            index = u32::conditional_select(&index, &(i as u32), eq & !found);
            found |= eq;
        }
    }
    match keys.get(index as usize) {
        Some(e) if bool::from(found) => Verdict::Client(e),
        _ => Verdict::Refused,
    }
}

/// Whether the headers present a key (as [`ApiKeyLayer`] reads them: `Authorization: Bearer`,
/// `x-api-key` or `api-key`) whose SHA-256 is `digest`. Compared as [`ApiKeyLayer`] compares:
/// over digests, in constant time, every presented value checked. For the gateway's other
/// keys (the server's admin and metrics keys).
pub fn presents_key(headers: &http::HeaderMap, digest: &[u8; 32]) -> bool {
    let mut found = subtle::Choice::from(0u8);
    for candidate in presented(headers) {
        let got: [u8; 32] = Sha256::digest(candidate).into();
        found |= got.ct_eq(digest);
    }
    bool::from(found)
}

fn rate_limited(e: &Entry, per_minute: u32, wait: u64) -> GatewayError {
    GatewayError::new(
        ErrorKind::RateLimit,
        format!(
            "the client key {:?} is limited to {per_minute} requests a minute; retry in {wait} s",
            e.key.name()
        ),
    )
    .with_code("rate_limit_exceeded")
    .with_retry_after(Some(wait))
}

impl<S, B> Service<Request<B>> for ApiKeyService<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Error: Into<GatewayError>,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ResponseFuture<tracing::instrument::Instrumented<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let keys = self.keys.clone();
        let entry = match check(&keys, &req) {
            Verdict::Open => {
                return ResponseFuture::inner(
                    self.inner.call(req).instrument(tracing::Span::none()),
                )
            }
            Verdict::Client(e) => e,
            Verdict::Refused => {
                // worded for the dialect the route was marked with, when it was
                let err = GatewayError::unauthorized(match req.extensions().get::<Dialect>() {
                    Some(Dialect::Anthropic) => {
                        "Invalid or missing API key. Use the x-api-key header or Authorization: Bearer."
                    }
                    Some(Dialect::OpenAi) => {
                        "Invalid or missing API key. Use Authorization: Bearer <key>."
                    }
                    None => {
                        "Invalid or missing API key. Use Authorization: Bearer <key> or the x-api-key header."
                    }
                });
                tracing::info!(path = %req.uri().path(), "rejected a request without a valid API key");
                return ResponseFuture::rejected(err);
            }
        };
        let name = &entry.key.name;
        if let Some(r) = req.extensions().get::<RequestRecord>() {
            r.set_client(name);
        }
        if let Some(per_minute) = entry.key.rate_limit_per_minute {
            if let Err(wait) = entry.buckets.take(name, per_minute) {
                tracing::info!(client = %name, path = %req.uri().path(), retry_after = wait, "client key over its rate limit");
                let err = rate_limited(entry, per_minute, wait);
                return ResponseFuture::rejected(err);
            }
        }
        let span = tracing::info_span!("client", client = %name);
        req.extensions_mut().insert(ClientName(name.clone()));
        ResponseFuture::inner(self.inner.call(req).instrument(span))
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
        // rendered as the stacks render it: by the dialect layer above
        let svc = crate::layers::DialectLayer::guess().layer(layer.layer(tower::service_fn(
            |_r: Request<Body>| async {
                Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
            },
        )));
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

    #[tokio::test]
    async fn the_matched_key_name_reaches_the_extensions_and_a_hash_works_as_a_key() {
        let hash: String = Sha256::digest(b"k2")
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        let l = ApiKeyLayer::with_clients([
            ClientKey::new("one", "k1"),
            ClientKey::from_sha256("two", &hash).unwrap(),
        ]);
        for (key, name) in [("k1", "one"), ("k2", "two")] {
            let svc = l.layer(tower::service_fn(|r: Request<Body>| async move {
                let n = r.extensions().get::<ClientName>().unwrap().0.to_string();
                Ok::<_, std::convert::Infallible>(Response::new(Body::from(n)))
            }));
            let req = Request::get("/v1/models")
                .header("x-api-key", key)
                .body(Body::empty())
                .unwrap();
            let resp = svc.oneshot(req).await.unwrap();
            let b = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            assert_eq!(b, name);
        }
        assert!(ClientKey::from_sha256("x", "abc").is_err());
        assert!(ClientKey::from_sha256("x", &"zz".repeat(32)).is_err());
        assert!(!format!("{:?}", ClientKey::new("n", "secret-key")).contains("secret"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_over_its_rate_limit_gets_429_until_the_bucket_refills() {
        let l = ApiKeyLayer::with_clients([ClientKey::new("c", "k").with_rate_limit_per_minute(2)]);
        let h = [("x-api-key", "k")];
        assert_eq!(status(&l, "/v1/messages", &h).await.0, 200);
        assert_eq!(status(&l, "/v1/messages", &h).await.0, 200);
        let (s, v) = status(&l, "/v1/messages", &h).await;
        assert_eq!(s, 429);
        assert_eq!(v["error"]["type"], "rate_limit_error");
        tokio::time::advance(std::time::Duration::from_secs(31)).await;
        assert_eq!(status(&l, "/v1/messages", &h).await.0, 200);
        assert_eq!(status(&l, "/v1/messages", &h).await.0, 429);
    }

    /// The layer takes from the bucket store it is given: one that is always empty makes
    /// the first request of a limited key a 429 with the store's wait, and it is asked for
    /// that key's name and limit; a key without a limit never asks it.
    #[tokio::test]
    async fn an_always_empty_bucket_store_makes_the_first_request_a_429() {
        #[derive(Default)]
        struct Empty {
            asked: Mutex<Vec<(String, u32)>>,
        }
        impl BucketStore for Empty {
            fn take(&self, client: &str, per_minute: u32) -> Result<(), u64> {
                self.asked
                    .lock()
                    .unwrap()
                    .push((client.to_owned(), per_minute));
                Err(42)
            }
        }
        let store = Arc::new(Empty::default());
        let l = ApiKeyLayer::with_clients([
            ClientKey::new("limited", "k").with_rate_limit_per_minute(100),
            ClientKey::new("free", "f"),
        ])
        .with_bucket_store(store.clone());
        let (s, v) = status(&l, "/v1/messages", &[("x-api-key", "k")]).await;
        assert_eq!(s, 429);
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(
            v["error"]["message"],
            "the client key \"limited\" is limited to 100 requests a minute; retry in 42 s"
        );
        assert_eq!(
            status(&l, "/v1/messages", &[("x-api-key", "f")]).await.0,
            200
        );
        assert_eq!(*store.asked.lock().unwrap(), [("limited".to_owned(), 100)]);
    }
}
