//! `JsonBodyLayer<T>`: reads the request body once (bounded), parses it into `T`, and hands the
//! inner service an `http::Request<T>`; no layer below parses JSON again. The raw bytes stay
//! available as a [`RawBody`] extension (a cheap `Bytes` clone) for debug capture.
//!
//! Over the limit → 413, not JSON or not the expected shape → 400, both in the request's
//! dialect; never the framework's plain-text rejection.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;
use tower_layer::Layer;
use tower_service::Service;

use crate::api::{Body, Dialect};
use crate::error::GatewayError;

/// The request body exactly as the client sent it.
#[derive(Debug, Clone)]
pub struct RawBody(pub Bytes);

/// See the module docs.
pub struct JsonBodyLayer<T> {
    limit: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for JsonBodyLayer<T> {
    fn clone(&self) -> Self {
        JsonBodyLayer {
            limit: self.limit,
            _t: PhantomData,
        }
    }
}

impl<T> JsonBodyLayer<T> {
    pub fn new(limit: usize) -> Self {
        JsonBodyLayer {
            limit,
            _t: PhantomData,
        }
    }
}

impl<S, T> Layer<S> for JsonBodyLayer<T> {
    type Service = JsonBodyService<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        JsonBodyService {
            inner,
            limit: self.limit,
            _t: PhantomData,
        }
    }
}

pub struct JsonBodyService<S, T> {
    inner: S,
    limit: usize,
    _t: PhantomData<fn() -> T>,
}

impl<S: Clone, T> Clone for JsonBodyService<S, T> {
    fn clone(&self) -> Self {
        JsonBodyService {
            inner: self.inner.clone(),
            limit: self.limit,
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
    let mut e = GatewayError::invalid_request(format!(
        "unsupported content type {mime:?}: send the body as JSON with Content-Type: application/json"
    ));
    e.status = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
    Err(e)
}

/// A client that sends its headers and then trickles (or withholds) the body is cut off after
/// this long with a 408: no request holds a task forever.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Read and parse a body (see the module docs).
pub async fn read_json<T: DeserializeOwned>(
    body: Body,
    limit: usize,
    declared_len: Option<u64>,
) -> Result<(T, Bytes), GatewayError> {
    if declared_len.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::too_large(limit));
    }
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect());
    let Ok(collected) = read.await else {
        let mut e = GatewayError::invalid_request(format!(
            "the request body did not arrive within {} s",
            BODY_READ_TIMEOUT.as_secs()
        ));
        e.status = http::StatusCode::REQUEST_TIMEOUT;
        return Err(e);
    };
    let bytes = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(GatewayError::too_large(limit));
            }
            return Err(GatewayError::invalid_request(format!(
                "could not read the request body: {e}"
            )));
        }
    };
    if bytes.is_empty() {
        return Err(GatewayError::invalid_request(
            "the request body is empty; a JSON object is expected",
        ));
    }
    match serde_json::from_slice::<T>(&bytes) {
        Ok(v) => Ok((v, bytes)),
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
    S: Service<Request<T>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    T: DeserializeOwned + Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // take the service that was made ready; leave a clone in its place
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limit = self.limit;
        Box::pin(async move {
            let dialect = Dialect::of(&req);
            let declared = req
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if let Err(e) = check_content_type(req.headers()) {
                return Ok(dialect.error_response(&e));
            }
            let (parts, body) = req.into_parts();
            match read_json::<T>(body, limit, declared).await {
                Ok((value, raw)) => {
                    let mut req = Request::from_parts(parts, value);
                    req.extensions_mut().insert(RawBody(raw));
                    inner.call(req).await
                }
                Err(e) => Ok(dialect.error_response(&e)),
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
        assert_eq!(err.status, http::StatusCode::REQUEST_TIMEOUT);
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
        assert_eq!(err.status, http::StatusCode::PAYLOAD_TOO_LARGE);
        let err = read_json::<serde_json::Value>(Body::empty(), 1024, Some(5000))
            .await
            .unwrap_err();
        assert_eq!(err.status, http::StatusCode::PAYLOAD_TOO_LARGE);
    }
}
