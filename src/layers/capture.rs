//! `DebugCaptureLayer`: `DEBUG_MODE=off|errors|all` (default off).
//!
//! For each captured request a folder `DEBUG_DIR/{time}_{request id}/` holds:
//! `request_body.json` (what the client sent), `kiro_request_body.json` (what went upstream),
//! `response_stream_raw.txt` (the upstream events, decoded, one JSON line each, and the failure
//! if there was one), `response_stream_modified.txt` (the bytes the client got),
//! `app_logs.txt` (what the gateway noted about the request) and, for failures,
//! `error_info.json`. `all` keeps every request, `errors` only failed ones; the newest
//! `DEBUG_KEEP` folders are kept and older ones deleted. Each file is bounded
//! (`MAX_FILE_BYTES`; past it the file ends with a truncation note), capture never blocks the
//! stream, and credentials are never written: request headers are not captured and anything
//! that looks like a bearer token or key in the texts is masked.
//!
//! With `off` the layer adds nothing to a request but one branch.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project::{pin_project, pinned_drop};
use tower_layer::Layer;
use tower_service::Service;

use crate::api::Body;
pub use crate::context::capture::{CaptureConfig, CaptureHandle, DebugMode, MAX_FILE_BYTES};
use crate::context::RawBody;
use crate::dialect::Dialect;
use crate::error::GatewayError;

/// See the module docs.
#[derive(Debug, Clone)]
pub struct DebugCaptureLayer {
    cfg: Arc<CaptureConfig>,
}

impl DebugCaptureLayer {
    /// Capture as `cfg` says (mode, folder, how many folders are kept).
    pub fn new(cfg: CaptureConfig) -> Self {
        DebugCaptureLayer { cfg: Arc::new(cfg) }
    }
}

impl<S> Layer<S> for DebugCaptureLayer {
    type Service = DebugCaptureService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DebugCaptureService {
            inner,
            cfg: self.cfg.clone(),
        }
    }
}

/// The service of [`DebugCaptureLayer`]: opens a capture for the request, then calls `S`.
#[derive(Debug, Clone)]
pub struct DebugCaptureService<S> {
    inner: S,
    cfg: Arc<CaptureConfig>,
}

impl<S> DebugCaptureService<S> {
    inner_service_accessors!();
}

impl<S, T> Service<Request<T>> for DebugCaptureService<S>
where
    S: Service<Request<T>, Response = Response<Body>>,
    S::Error: Into<GatewayError>,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = CaptureFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<T>) -> Self::Future {
        // the raw body is only kept for the capture: taken out of the request, so a large
        // body is not held (beside its parsed form) while the request is translated and served
        let raw = req.extensions_mut().remove::<RawBody>();
        if self.cfg.mode == DebugMode::Off {
            return CaptureFuture {
                fut: self.inner.call(req),
                handle: None,
                dialect: None,
            };
        }
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(|s| {
                s.chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .take(64)
                    .collect()
            })
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let body = raw.map(|r| r.0).unwrap_or_default();
        let handle = CaptureHandle::new(request_id, body, self.cfg.clone());
        handle.log(&format!("{} {}", req.method(), req.uri().path()));
        req.extensions_mut().insert(handle.clone());
        let dialect = req.extensions().get::<Dialect>().copied();
        CaptureFuture {
            fut: self.inner.call(req),
            handle: Some(handle),
            dialect,
        }
    }
}

/// The response future of [`DebugCaptureService`].
#[pin_project]
pub struct CaptureFuture<F> {
    #[pin]
    fut: F,
    handle: Option<CaptureHandle>,
    /// The request's dialect (marked above), to keep a refusal as the client gets it.
    dialect: Option<Dialect>,
}

impl<F: std::fmt::Debug> std::fmt::Debug for CaptureFuture<F> {
    /// Whether a capture is open; never what it holds (the request body).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureFuture")
            .field("fut", &self.fut)
            .field("capturing", &self.handle.is_some())
            .field("dialect", &self.dialect)
            .finish()
    }
}

impl<F, E> Future for CaptureFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
    E: Into<GatewayError>,
{
    type Output = Result<Response<Body>, GatewayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = match this.fut.poll(cx) {
            Poll::Ready(Ok(r)) => r,
            Poll::Ready(Err(e)) => {
                let e: GatewayError = e.into();
                if let Some(handle) = this.handle.take() {
                    // the error goes up to be rendered; the capture keeps it as the client
                    // will get it, and is written now (there is no body to wait for)
                    handle.fail(e.status().as_u16(), e.message());
                    handle.log(&format!("response status {}", e.status().as_u16()));
                    if let Some(d) = this.dialect {
                        handle.client_bytes(d.error_json(&e).to_string().as_bytes());
                    }
                    handle.finalize();
                }
                return Poll::Ready(Err(e));
            }
            Poll::Pending => return Poll::Pending,
        };
        let Some(handle) = this.handle.take() else {
            return Poll::Ready(Ok(resp));
        };
        // (a Responses stream can report a failure as a 200 with `response.failed`)
        if !resp.status().is_success() || resp.extensions().get::<GatewayError>().is_some() {
            let msg = resp
                .extensions()
                .get::<GatewayError>()
                .map(|e| e.message().to_owned())
                .unwrap_or_default();
            handle.fail(resp.status().as_u16(), &msg);
        }
        handle.log(&format!("response status {}", resp.status().as_u16()));
        let (parts, body) = resp.into_parts();
        let body = Body::new(CaptureBody {
            inner: body,
            handle,
        });
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

/// Tees the response bytes into the capture; writes the folder when the body ends or is
/// dropped (a client that went away).
#[pin_project(PinnedDrop)]
pub struct CaptureBody<B> {
    #[pin]
    inner: B,
    handle: CaptureHandle,
}

impl<B: std::fmt::Debug> std::fmt::Debug for CaptureBody<B> {
    /// The wrapped body; never the bytes captured so far.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[pinned_drop]
impl<B> PinnedDrop for CaptureBody<B> {
    fn drop(self: Pin<&mut Self>) {
        self.handle.finalize();
    }
}

impl<B> HttpBody for CaptureBody<B>
where
    B: HttpBody<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.handle.client_bytes(d);
                }
            }
            Poll::Ready(None) => this.handle.finalize(),
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
