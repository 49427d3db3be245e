//! `UpstreamCaptureLayer`: on the Kiro side of a stack, copies what the Kiro service answered
//! into the request's debug capture: each event as a JSON line of `response_stream_raw.txt`,
//! and the failure (of the call, or of the stream after it started) as the capture's error.
//!
//! It acts only on a [`GenerateRequest`] whose extensions carry a
//! [`CaptureHandle`](crate::context::CaptureHandle) (the
//! [`DebugCaptureLayer`](super::DebugCaptureLayer) opens one when `DEBUG_MODE` is not `off`,
//! and the translation passes it down); everything else goes through untouched, at the cost of
//! one extension lookup. The translation itself keeps no capture code.

#![deny(missing_docs)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::StreamExt;
use pin_project::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::context::CaptureHandle;
use crate::kiro::{self, Event, GenerateRequest, GenerateResponse, KiroEvents};

/// See the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpstreamCaptureLayer;

impl UpstreamCaptureLayer {
    /// The layer (it has no settings: the capture handle of each request says what to do).
    pub fn new() -> Self {
        UpstreamCaptureLayer
    }
}

impl<S> Layer<S> for UpstreamCaptureLayer {
    type Service = UpstreamCapture<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UpstreamCapture { inner }
    }
}

/// See [`UpstreamCaptureLayer`].
#[derive(Debug, Clone)]
pub struct UpstreamCapture<S> {
    inner: S,
}

impl<S> UpstreamCapture<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<GenerateRequest> for UpstreamCapture<S>
where
    S: Service<GenerateRequest, Response = GenerateResponse, Error = kiro::Error>,
{
    type Response = GenerateResponse;
    type Error = kiro::Error;
    type Future = UpstreamCaptureFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: GenerateRequest) -> Self::Future {
        let handle = req.extensions.get::<CaptureHandle>().cloned();
        UpstreamCaptureFuture {
            fut: self.inner.call(req),
            handle,
        }
    }
}

/// The response future of [`UpstreamCapture`].
#[pin_project]
#[derive(Debug)]
pub struct UpstreamCaptureFuture<F> {
    #[pin]
    fut: F,
    handle: Option<CaptureHandle>,
}

impl<F> Future for UpstreamCaptureFuture<F>
where
    F: Future<Output = Result<GenerateResponse, kiro::Error>>,
{
    type Output = Result<GenerateResponse, kiro::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.fut.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        let Some(handle) = this.handle.take() else {
            return Poll::Ready(result);
        };
        Poll::Ready(match result {
            Ok(mut resp) => {
                resp.events = captured(resp.events, handle);
                Ok(resp)
            }
            Err(e) => {
                handle.log(&format!("upstream failed: {e}"));
                Err(e)
            }
        })
    }
}

/// Record every event (and the failure, if any) into the capture as JSON lines.
fn captured(events: KiroEvents, handle: CaptureHandle) -> KiroEvents {
    Box::pin(events.map(move |item| {
        match &item {
            Ok(ev) => handle.upstream_line(&event_line(ev)),
            Err(e) => {
                handle.upstream_line(&serde_json::json!({"error": e.to_string()}).to_string());
                handle.fail(502, &e.to_string());
            }
        }
        item
    }))
}

/// One event as the JSON line the capture keeps (the service's own member names).
fn event_line(ev: &Event) -> String {
    use serde_json::json;
    let v = match ev {
        Event::Text { content } => json!({"assistantResponseEvent": {"content": content}}),
        Event::Reasoning { text, signature } => {
            json!({"reasoning": {"text": text, "signature": signature}})
        }
        Event::ToolUse(t) => json!({"toolUseEvent": {"toolUseId": t.tool_use_id, "name": t.name,
            "input": format!("{:?}", t.input), "stop": t.stop}}),
        Event::RedactedReasoning { data } => {
            json!({"reasoningContentEvent": {"redactedContent": data}})
        }
        Event::Metadata(m) => json!({"metadataEvent": {
            "tokenUsage": m.token_usage.map(|u| json!({
                "uncachedInputTokens": u.uncached_input_tokens,
                "cacheReadInputTokens": u.cache_read_input_tokens,
                "cacheWriteInputTokens": u.cache_write_input_tokens,
                "outputTokens": u.output_tokens,
                "totalTokens": u.total_tokens,
            })),
            "stopReason": m.stop_reason, "stopDetails": m.stop_details}}),
        Event::Metering(m) => json!({"meteringEvent": {"unit": m.unit, "usage": m.usage}}),
        Event::ContextUsage { percentage } => {
            json!({"contextUsageEvent": {"contextUsagePercentage": percentage}})
        }
        Event::MessageMetadata {
            conversation_id,
            utterance_id,
        } => {
            json!({"messageMetadataEvent": {"conversationId": conversation_id, "utteranceId": utterance_id}})
        }
        Event::Unknown {
            event_type,
            payload,
        } => {
            json!({ event_type.clone(): String::from_utf8_lossy(payload) })
        }
    };
    v.to_string()
}
