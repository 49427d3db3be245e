//! `JsonBodyLayer<T>`: reads the request body once (bounded), parses it into `T`, and hands the
//! inner service an `http::Request<T>`; no layer below parses JSON again. The raw bytes stay
//! available as a [`RawBody`] extension (a cheap `Bytes` clone) for debug capture, which takes
//! it out of the request.
//!
//! Over the limit → 413, not JSON or not the expected shape → 400, both in the request's
//! dialect; never the framework's plain-text rejection.
//!
//! With a [`BodyBudget`] (`MAX_INFLIGHT_BODY_BYTES`), the bytes of every body being read and
//! translated are counted against one shared budget: a body's declared `Content-Length` is
//! taken from it before any byte is read, a chunked body's bytes as they arrive, and they go
//! back when the inner service has answered (for a stream: when its head is sent; what the
//! stream keeps is the translated request, bounded by `KIRO_MAX_PAYLOAD_BYTES`). A body that
//! does not fit is refused with a 503 and `Retry-After`, so a burst of large bodies cannot
//! take the memory of the process.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_layer::Layer;
use tower_service::Service;

use crate::api::Body;
use crate::error::GatewayError;

pub use crate::context::{BodySize, RawBody};

/// Bodies at least this large are parsed (and translated, see
/// [`TranslateLayer`](super::TranslateLayer)) on the blocking pool, so the CPU they take
/// never holds up the async workers that serve every other connection.
pub const OFFLOAD_BODY_BYTES: usize = 1024 * 1024;

/// How long a client refused for lack of [`BodyBudget`] is asked to wait (`Retry-After`).
pub const BUDGET_RETRY_AFTER_SECS: u64 = 2;

/// `MAX_INFLIGHT_BODY_BYTES`: the request-body bytes all requests together may hold while
/// they are read and translated (see the module docs). Cheap to clone (one `Arc`).
#[derive(Clone, Debug)]
pub struct BodyBudget {
    sem: Arc<Semaphore>,
    total: usize,
}

/// Bytes taken from a [`BodyBudget`]; they go back when this is dropped.
#[derive(Debug)]
pub struct BodyPermit(Option<OwnedSemaphorePermit>);

impl BodyBudget {
    /// A budget of `bytes` (capped at what a semaphore can count, about 2^61).
    pub fn new(bytes: usize) -> Self {
        let total = bytes.min(Semaphore::MAX_PERMITS);
        BodyBudget {
            sem: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// The budget's size.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes not taken now.
    pub fn available(&self) -> usize {
        self.sem.available_permits()
    }

    /// Take `n` more bytes into `permit`, or say the budget is spent (nothing taken then).
    fn take(&self, permit: &mut BodyPermit, n: usize) -> Result<(), GatewayError> {
        let mut left = n;
        let mut got: Option<OwnedSemaphorePermit> = None;
        while left > 0 {
            let step = u32::try_from(left).unwrap_or(u32::MAX);
            match self.sem.clone().try_acquire_many_owned(step) {
                Ok(p) => {
                    match &mut got {
                        Some(g) => g.merge(p),
                        None => got = Some(p),
                    }
                    left -= step as usize;
                }
                // `got` is dropped here: the part already taken goes back
                Err(_) => return Err(self.refusal()),
            }
        }
        if let Some(p) = got {
            match &mut permit.0 {
                Some(have) => have.merge(p),
                None => permit.0 = Some(p),
            }
        }
        Ok(())
    }

    /// The 503 a body that does not fit gets.
    fn refusal(&self) -> GatewayError {
        GatewayError::new(
            crate::error::ErrorKind::Overloaded,
            format!(
                "the gateway is busy: request bodies being processed already hold its {} bytes (MAX_INFLIGHT_BODY_BYTES); retry in a moment",
                self.total
            ),
        )
        .with_code("inflight_body_limit")
        .with_retry_after(Some(BUDGET_RETRY_AFTER_SECS))
    }
}

impl BodyPermit {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }
}

/// See the module docs.
pub struct JsonBodyLayer<T> {
    limit: usize,
    budget: Option<BodyBudget>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for JsonBodyLayer<T> {
    fn clone(&self) -> Self {
        JsonBodyLayer {
            limit: self.limit,
            budget: self.budget.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for JsonBodyLayer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonBodyLayer")
            .field("limit", &self.limit)
            .field("budget", &self.budget)
            .field("body", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T> JsonBodyLayer<T> {
    /// Parse bodies of at most `limit` bytes into `T` (a larger one is a 413).
    pub fn new(limit: usize) -> Self {
        JsonBodyLayer {
            limit,
            budget: None,
            _t: PhantomData,
        }
    }

    /// Count the bodies against `budget` (`MAX_INFLIGHT_BODY_BYTES`).
    pub fn with_budget(mut self, budget: BodyBudget) -> Self {
        self.budget = Some(budget);
        self
    }
}

impl<S, T> Layer<S> for JsonBodyLayer<T> {
    type Service = JsonBodyService<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        JsonBodyService {
            inner,
            limit: self.limit,
            budget: self.budget.clone(),
            _t: PhantomData,
        }
    }
}

/// The service of [`JsonBodyLayer`]: reads and parses the body, then calls `S` with an
/// `http::Request<T>`.
pub struct JsonBodyService<S, T> {
    inner: S,
    limit: usize,
    budget: Option<BodyBudget>,
    _t: PhantomData<fn() -> T>,
}

impl<S, T> JsonBodyService<S, T> {
    inner_service_accessors!();
}

impl<S: std::fmt::Debug, T> std::fmt::Debug for JsonBodyService<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonBodyService")
            .field("inner", &self.inner)
            .field("limit", &self.limit)
            .field("budget", &self.budget)
            .field("body", &std::any::type_name::<T>())
            .finish()
    }
}

impl<S: Clone, T> Clone for JsonBodyService<S, T> {
    fn clone(&self) -> Self {
        JsonBodyService {
            inner: self.inner.clone(),
            limit: self.limit,
            budget: self.budget.clone(),
            _t: PhantomData,
        }
    }
}

/// A declared content type must be JSON (`application/json`, `…+json`); a missing one is
/// accepted. Anything else is a 415 that says what to send.
pub fn check_content_type(headers: &http::HeaderMap) -> Result<(), GatewayError> {
    let Some(v) = headers.get(http::header::CONTENT_TYPE) else {
        return Ok(());
    };
    let mime = v
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || mime.ends_with("+json") || mime.is_empty() {
        return Ok(());
    }
    Err(GatewayError::from_status(
        http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "unsupported content type {mime:?}: send the body as JSON with Content-Type: application/json"
        ),
    ))
}

/// A client that sends its headers and then trickles (or withholds) the body is cut off after
/// this long with a 408: no request holds a task forever.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Read and parse a body (see the module docs).
pub async fn read_json<T: DeserializeOwned + Send + 'static>(
    body: Body,
    limit: usize,
    declared_len: Option<u64>,
) -> Result<(T, Bytes), GatewayError> {
    read_json_within(body, limit, declared_len, None)
        .await
        .map(|(v, raw, _)| (v, raw))
}

/// [`read_json`], the bytes counted against `budget`: the permit returned holds them until it
/// is dropped.
pub async fn read_json_within<T: DeserializeOwned + Send + 'static>(
    body: Body,
    limit: usize,
    declared_len: Option<u64>,
    budget: Option<&BodyBudget>,
) -> Result<(T, Bytes, BodyPermit), GatewayError> {
    if declared_len.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::too_large(limit));
    }
    let declared = declared_len.map_or(0, |n| n as usize);
    let mut permit = BodyPermit(None);
    if let Some(b) = budget {
        b.take(&mut permit, declared)?;
    }
    let read = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        collect_bounded(body, limit, declared, budget, &mut permit),
    );
    let Ok(collected) = read.await else {
        return Err(GatewayError::from_status(
            http::StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        ));
    };
    let bytes = collected?;
    if bytes.is_empty() {
        return Err(GatewayError::invalid_request(
            "the request body is empty; a JSON object is expected",
        ));
    }
    let value = if bytes.len() >= OFFLOAD_BODY_BYTES {
        // parsing megabytes of JSON takes milliseconds of CPU: not on an async worker
        let raw = bytes.clone();
        tokio::task::spawn_blocking(move || parse::<T>(&raw))
            .await
            .map_err(|e| GatewayError::internal(format!("the body parser failed: {e}")))??
    } else {
        parse::<T>(&bytes)?
    };
    Ok((value, bytes, permit))
}

/// The body's bytes in one buffer (sized from `Content-Length` when there is one, so a large
/// body is never held twice), at most `limit` of them, each byte past the `reserved` ones
/// taken from `budget` as it arrives.
async fn collect_bounded(
    mut body: Body,
    limit: usize,
    reserved: usize,
    budget: Option<&BodyBudget>,
    permit: &mut BodyPermit,
) -> Result<Bytes, GatewayError> {
    let mut buf = BytesMut::with_capacity(reserved.min(limit));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            GatewayError::invalid_request(format!("could not read the request body: {e}"))
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let len = buf.len() + data.len();
        if len > limit {
            return Err(GatewayError::too_large(limit));
        }
        if let Some(b) = budget {
            let held = permit.bytes();
            if len > held {
                b.take(permit, len - held)?;
            }
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, GatewayError> {
    match serde_json::from_slice::<T>(bytes) {
        Ok(v) => Ok(v),
        Err(e) if e.is_syntax() || e.is_eof() => Err(GatewayError::invalid_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
        Err(e) => Err(GatewayError::invalid_request(format!(
            "the request body does not have the expected shape: {e}"
        ))),
    }
}

impl<S, T> Service<Request<Body>> for JsonBodyService<S, T>
where
    S: Service<Request<T>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<GatewayError>,
    S::Future: Send,
    T: DeserializeOwned + Send + 'static,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    // Boxed, not a hand-written pin-projected future: the body has to be awaited frame by
    // frame (under a timeout, against the budget, maybe parsed on the blocking pool) before
    // the inner service can be called, and that sequence is an `async` block. One allocation
    // per request, next to reading the whole body, is not worth a state machine by hand.
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, GatewayError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // take the service that was made ready; leave a clone in its place
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limit = self.limit;
        let budget = self.budget.clone();
        Box::pin(async move {
            let declared = req
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            check_content_type(req.headers())?;
            let (parts, body) = req.into_parts();
            match read_json_within::<T>(body, limit, declared, budget.as_ref()).await {
                Ok((value, raw, permit)) => {
                    let mut req = Request::from_parts(parts, value);
                    req.extensions_mut().insert(BodySize(raw.len()));
                    req.extensions_mut().insert(RawBody(raw));
                    let answer = inner.call(req).await.map_err(Into::into);
                    // the body and what was built from it are gone by now (a stream keeps
                    // only the translated request): the bytes go back to the budget
                    drop(permit);
                    answer
                }
                Err(e) => Err(e),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_arrives_times_out_with_408() {
        let stalled =
            Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>());
        let err = read_json::<serde_json::Value>(stalled, 1024, None)
            .await
            .unwrap_err();
        assert_eq!(err.status(), http::StatusCode::REQUEST_TIMEOUT);
    }

    #[tokio::test]
    async fn bodies_over_the_inflight_budget_get_a_503_with_retry_after() {
        let budget = BodyBudget::new(1000);
        // a body that declared 800 bytes and is still arriving holds them
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let stalled = Body::from_stream(tokio_stream_of(rx));
        let held_budget = budget.clone();
        let first = tokio::spawn(async move {
            read_json_within::<serde_json::Value>(stalled, 4096, Some(800), Some(&held_budget))
                .await
                .map(|(v, _, p)| (v, p.bytes()))
        });
        while budget.available() != 200 {
            tokio::task::yield_now().await;
        }
        // declared: refused before a byte is read
        let err =
            read_json_within::<serde_json::Value>(Body::from("{}"), 4096, Some(500), Some(&budget))
                .await
                .unwrap_err();
        assert_eq!(err.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.kind(), crate::error::ErrorKind::Overloaded);
        assert_eq!(err.retry_after(), Some(BUDGET_RETRY_AFTER_SECS));
        assert_eq!(err.code(), Some("inflight_body_limit"));
        assert!(
            err.message().contains("MAX_INFLIGHT_BODY_BYTES"),
            "{}",
            err.message()
        );
        // chunked (no length): counted as the bytes arrive
        let chunks = futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 150])),
            Ok(Bytes::from(vec![b' '; 150])),
        ]);
        let err = read_json_within::<serde_json::Value>(
            Body::from_stream(chunks),
            4096,
            None,
            Some(&budget),
        )
        .await
        .unwrap_err();
        assert_eq!(err.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        // what a refused body had taken went back
        assert_eq!(budget.available(), 200);
        // the first body arrives; its bytes stay taken while its permit lives
        tx.send(Ok(Bytes::from(format!(
            "{{\"a\":\"{}\"}}",
            "x".repeat(792)
        ))))
        .await
        .unwrap();
        drop(tx);
        let (v, held) = first.await.unwrap().unwrap();
        assert_eq!(v["a"].as_str().map(str::len), Some(792));
        assert_eq!(held, 800);
        assert_eq!(budget.available(), 1000);
        // a small body fits again
        let (v, _, permit) = read_json_within::<serde_json::Value>(
            Body::from("{\"b\":1}"),
            4096,
            None,
            Some(&budget),
        )
        .await
        .unwrap();
        assert_eq!(v["b"], 1);
        assert_eq!(budget.available(), 1000 - permit.bytes());
    }

    fn tokio_stream_of<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Send {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    #[tokio::test]
    async fn json_is_read_and_limits_hold() {
        let (v, raw) = read_json::<serde_json::Value>(Body::from("{\"a\":1}"), 1024, None)
            .await
            .unwrap();
        assert_eq!(v["a"], 1);
        assert_eq!(&raw[..], b"{\"a\":1}");
        let err = read_json::<serde_json::Value>(Body::from("x".repeat(2000)), 1024, None)
            .await
            .unwrap_err();
        assert_eq!(err.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
        let err = read_json::<serde_json::Value>(Body::empty(), 1024, Some(5000))
            .await
            .unwrap_err();
        assert_eq!(err.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
    }
}
