//! The public dialects. Each converts its request into the shared [`conversation`] model and
//! renders Kiro events back, as a stream (an [`Encoder`]) or folded into one answer (a
//! [`Folder`]). What the dialects share lives here once.

pub mod anthropic;
pub mod conversation;
pub mod jsonsplit;
pub mod openai;
pub mod preflight;
pub mod responses;
pub mod thinking;
pub mod usage;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http::{HeaderValue, Response, StatusCode};

use crate::error::GatewayError;
use crate::kiro::client::KiroEvents;
use crate::kiro::Event;
use conversation::Conversation;
use thinking::{ReasoningAsk, ThinkingDefaults};

pub use crate::body::Body;
pub use crate::dialect::Dialect;

/// What a public dialect provides to the translation layer
/// ([`TranslateLayer`](crate::layers::TranslateLayer)): its request type, how to read it into
/// the shared conversation, and how to render the answer, streamed or folded.
pub trait DialectApi: Send + Sync + 'static {
    /// The parsed request body.
    type Request: Send + 'static;
    type Encoder: Encoder + Unpin;
    type Folder: Folder;
    const DIALECT: Dialect;
    /// Prefix of response ids (`chatcmpl-`, `msg_`).
    const ID_PREFIX: &'static str;
    /// The route the dialect is served on (the `route` label of its metrics).
    const ROUTE: &'static str;
    /// What the request calls its list of messages, in the places pre-flight errors name
    /// (`messages[2]`; the Responses API's `input[2]`).
    const MESSAGES: &'static str = "messages";

    fn model(req: &Self::Request) -> &str;
    fn is_stream(req: &Self::Request) -> bool;
    /// Give the request what it needs before it is converted (the Responses dialect takes the
    /// store of finished responses); nothing by default.
    fn bind(_req: &mut Self::Request, _responses: &responses::ResponseStoreHandle) {}
    /// A failure before the answer started, in the dialect's own terms when it has a better
    /// form than an HTTP error (the Responses stream's `response.failed`); `None`: the error
    /// response.
    fn failure(_req: &Self::Request, _err: &GatewayError) -> Option<Response<Body>> {
        None
    }
    fn conversation(req: &Self::Request) -> Result<Conversation, GatewayError>;
    /// The reasoning this request asks for: `Some` to ask the model to reason, `None` for no
    /// reasoning; a request that does not say gets the configured default.
    fn reasoning(req: &Self::Request, defaults: ThinkingDefaults) -> Option<ReasoningAsk>;
    fn encoder(req: &Self::Request, meta: ResponseMeta) -> Self::Encoder;
    fn folder(req: &Self::Request, meta: ResponseMeta) -> Self::Folder;
}

/// What a dialect's encoder or folder needs to know about the request.
#[derive(Debug, Clone)]
pub struct ResponseMeta {
    pub id: String,
    pub created: u64,
    /// The model name as the client wrote it (echoed in responses).
    pub model: String,
    pub usage: usage::UsageTracker,
}

/// How an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The model finished (or stopped to call tools).
    Complete,
    /// The service cut the output for length: OpenAI `finish_reason: "length"`.
    Length,
}

/// Why an answer stopped, in terms both dialects can say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    EndTurn,
    ToolUse,
    /// The output was cut for length (`ContentLengthExceededException`, `MAX_TOKENS`).
    MaxTokens,
    /// `MODEL_CONTEXT_WINDOW_EXCEEDED`.
    ContextWindow,
    /// `CONTENT_FILTERED`.
    ContentFiltered,
    /// `PAUSE_TURN`.
    PauseTurn,
}

impl Stop {
    /// From how the stream ended, the service's `metadataEvent.stopReason` and whether the
    /// answer called tools (an ordinary end after tool calls is a tool-use stop).
    pub fn of(end: End, service: Option<&str>, called_tools: bool) -> Stop {
        if end == End::Length {
            return Stop::MaxTokens;
        }
        match service.map(str::to_ascii_uppercase).as_deref() {
            Some("MAX_TOKENS") => Stop::MaxTokens,
            Some("MODEL_CONTEXT_WINDOW_EXCEEDED") => Stop::ContextWindow,
            Some("CONTENT_FILTERED") => Stop::ContentFiltered,
            Some("PAUSE_TURN") => Stop::PauseTurn,
            _ if called_tools => Stop::ToolUse,
            _ => Stop::EndTurn,
        }
    }

    /// OpenAI `finish_reason`.
    pub fn openai(self) -> &'static str {
        match self {
            Stop::EndTurn | Stop::PauseTurn => "stop",
            Stop::ToolUse => "tool_calls",
            Stop::MaxTokens | Stop::ContextWindow => "length",
            Stop::ContentFiltered => "content_filter",
        }
    }

    /// Anthropic `stop_reason`.
    pub fn anthropic(self) -> &'static str {
        match self {
            Stop::EndTurn => "end_turn",
            Stop::ToolUse => "tool_use",
            Stop::MaxTokens => "max_tokens",
            Stop::ContextWindow => "model_context_window_exceeded",
            Stop::ContentFiltered => "refusal",
            Stop::PauseTurn => "pause_turn",
        }
    }
}

/// Tracks the tool calls of an answer to find one the service cut short: its joined arguments
/// are not valid JSON when its stop event (or the end of the stream) arrives. Such a call is
/// never completed with invented arguments; the answer ends as cut for length instead.
#[derive(Debug, Default)]
pub struct ToolCallCheck {
    calls: crate::kiro::ToolCallAssembler,
    checked: Vec<bool>,
    truncated: bool,
}

impl ToolCallCheck {
    pub fn push(&mut self, ev: &crate::kiro::ToolUseEvent) {
        let i = self.calls.push(ev);
        if self.checked.len() <= i {
            self.checked.resize(i + 1, false);
        }
        if ev.stop {
            self.check(i);
        }
    }

    fn check(&mut self, i: usize) {
        if self.checked.get(i).copied().unwrap_or(true) {
            return;
        }
        self.checked[i] = true;
        if let Some(c) = self.calls.calls().get(i) {
            if !tool_call_complete(c) {
                self.truncated = true;
            }
        }
    }

    /// At the end of the answer: checks the calls that never got a stop event; `true` when a
    /// call was cut short.
    pub fn finish(&mut self) -> bool {
        for i in 0..self.checked.len() {
            self.check(i);
        }
        self.truncated
    }
}

/// Whether a reassembled call's arguments are complete JSON; warns (naming the tool and the
/// bytes received) when they are not.
pub fn tool_call_complete(c: &crate::kiro::events::AssembledToolCall) -> bool {
    if c.parsed_arguments().is_ok() {
        return true;
    }
    tracing::warn!(
        tool = %c.name,
        id = %c.tool_use_id,
        bytes = c.arguments.len(),
        "Kiro cut a tool call short: its arguments are not complete JSON; the answer ends as cut for length"
    );
    false
}

/// Whether an upstream error is the service's "output cut for length", which ends an answer
/// with a length stop rather than as a failure.
fn length_cut(e: &crate::kiro::Error) -> bool {
    e.stream_exception()
        .is_some_and(crate::kiro::StreamException::is_content_length_exceeded)
}

/// Maps Kiro events to dialect stream events (already framed as SSE bytes).
pub trait Encoder: Send + 'static {
    /// One upstream event.
    fn on_event(&mut self, ev: Event, out: &mut Vec<Bytes>);
    /// The upstream answer ended: emit the closing events. `End::Length` when the service cut
    /// the output for length (`ContentLengthExceededException`).
    fn on_end(&mut self, end: End, out: &mut Vec<Bytes>);
    /// The upstream failed mid-stream: emit the dialect's error event (and nothing that
    /// looks like success).
    fn on_error(&mut self, err: GatewayError, out: &mut Vec<Bytes>);
    /// Bytes that keep an idle connection open (an SSE comment by default).
    fn keepalive(&mut self) -> Option<Bytes> {
        Some(Bytes::from_static(b": keep-alive\n\n"))
    }
}

/// Silence on the wire after which [`SseBody`] sends the encoder's keep-alive (Claude Code gives
/// up after five minutes without bytes; proxies often sooner).
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);

/// Folds Kiro events into one non-streamed answer.
pub trait Folder: Send + 'static {
    fn on_event(&mut self, ev: Event);
    /// The complete answer (status 200).
    fn finish(self, end: End) -> Response<Body>;
}

/// Counts the stream bodies alive (for `/health` and the leak tests); cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct StreamGauge(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl StreamGauge {
    pub fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Held by a stream body; gives its count back when the body is dropped.
struct GaugeGuard(StreamGauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        (self.0)
            .0
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A response body that pulls upstream events only when the client is ready for more bytes
/// (hyper polls it as it writes), encodes them, and yields the SSE bytes. Dropping it drops
/// the upstream stream, which closes the upstream connection.
pub struct SseBody<E> {
    events: KiroEvents,
    encoder: E,
    pending: VecDeque<Bytes>,
    scratch: Vec<Bytes>,
    done: bool,
    /// fires after [`KEEPALIVE_INTERVAL`] without output
    idle: Pin<Box<tokio::time::Sleep>>,
    /// fires when the server gives up waiting for streams at shutdown
    closing: Option<Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>>,
    _counted: Option<GaugeGuard>,
    /// told of a failure after the response started (once)
    on_failure: Option<FailureHook>,
}

/// Called with the error a stream ended on after its response had started.
pub type FailureHook = Box<dyn FnOnce(&GatewayError) + Send + Sync>;

impl<E: Encoder + Unpin> SseBody<E> {
    pub fn new(events: KiroEvents, encoder: E) -> Self {
        SseBody {
            events,
            encoder,
            pending: VecDeque::new(),
            scratch: Vec::new(),
            done: false,
            idle: Box::pin(tokio::time::sleep(KEEPALIVE_INTERVAL)),
            closing: None,
            _counted: None,
            on_failure: None,
        }
    }

    /// Count this body in `gauge` while it lives.
    pub fn counted(mut self, gauge: &StreamGauge) -> Self {
        gauge.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self._counted = Some(GaugeGuard(gauge.clone()));
        self
    }

    /// Tell `hook` the error the stream ends on, if it ends on one (after the response
    /// started, so its status said 200).
    pub fn on_failure(mut self, hook: FailureHook) -> Self {
        self.on_failure = Some(hook);
        self
    }

    fn failed(&mut self, e: &GatewayError) {
        if let Some(hook) = self.on_failure.take() {
            hook(e);
        }
    }

    /// End the stream with an error event when `token` is cancelled (server shutdown).
    pub fn close_on(mut self, token: tokio_util::sync::CancellationToken) -> Self {
        self.closing = Some(Box::pin(token.cancelled_owned()));
        self
    }

    /// A `text/event-stream` response around this body.
    pub fn into_response(self) -> Response<Body> {
        let mut r = Response::new(Body::from_stream(self));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        r.headers_mut().insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        r.headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
        *r.status_mut() = StatusCode::OK;
        r
    }
}

/// Bytes of SSE events gathered into one body frame when several are ready at once.
const COALESCE_LIMIT: usize = 8 * 1024;

impl<E: Encoder> SseBody<E> {
    /// Everything pending as one frame (events that were ready together leave in one write);
    /// output restarts the keep-alive timer.
    fn take_pending(&mut self) -> Bytes {
        let next = tokio::time::Instant::now() + KEEPALIVE_INTERVAL;
        self.idle.as_mut().reset(next);
        if self.pending.len() == 1 {
            return self.pending.pop_front().unwrap_or_default();
        }
        let len = self.pending.iter().map(Bytes::len).sum();
        let mut out = bytes::BytesMut::with_capacity(len);
        for b in self.pending.drain(..) {
            out.extend_from_slice(&b);
        }
        out.freeze()
    }

    fn pending_len(&self) -> usize {
        self.pending.iter().map(Bytes::len).sum()
    }
}

impl<E: Encoder + Unpin> Stream for SseBody<E> {
    type Item = Result<Bytes, Infallible>;

    /// Pulls upstream events while they are ready (never waiting for more), encodes them, and
    /// yields what they produced as one frame: no added latency, fewer writes under bursts.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done || this.pending_len() >= COALESCE_LIMIT {
                if this.pending.is_empty() {
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Ok(this.take_pending())));
            }
            match this.events.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(ev))) => this.encoder.on_event(ev, &mut this.scratch),
                Poll::Ready(Some(Err(e))) if length_cut(&e) => {
                    this.done = true;
                    this.encoder.on_end(End::Length, &mut this.scratch);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    tracing::warn!(error = %e, "upstream stream failed after the response started");
                    let e = GatewayError::from(e);
                    this.failed(&e);
                    this.encoder.on_error(e, &mut this.scratch);
                }
                Poll::Ready(None) => {
                    this.done = true;
                    this.encoder.on_end(End::Complete, &mut this.scratch);
                }
                Poll::Pending => {
                    if !this.pending.is_empty() {
                        return Poll::Ready(Some(Ok(this.take_pending())));
                    }
                    if let Some(closing) = this.closing.as_mut() {
                        if closing.as_mut().poll(cx).is_ready() {
                            this.done = true;
                            let e = GatewayError::new(
                                crate::error::ErrorKind::Overloaded,
                                "the gateway is shutting down; the answer was cut short",
                            )
                            .with_code("gateway_shutdown");
                            this.failed(&e);
                            this.encoder.on_error(e, &mut this.scratch);
                            this.pending.extend(this.scratch.drain(..));
                            continue;
                        }
                    }
                    if this.idle.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let next = tokio::time::Instant::now() + KEEPALIVE_INTERVAL;
                    this.idle.as_mut().reset(next);
                    match this.encoder.keepalive() {
                        Some(b) => return Poll::Ready(Some(Ok(b))),
                        None => return Poll::Pending,
                    }
                }
            }
            this.pending.extend(this.scratch.drain(..));
        }
    }
}

/// Drive a folder over the whole event stream; a failure anywhere is an error (for the
/// dialect layer to render), never a partial answer dressed as complete.
pub async fn fold<F: Folder>(
    mut events: KiroEvents,
    mut folder: F,
) -> Result<Response<Body>, GatewayError> {
    use futures_util::StreamExt;
    while let Some(item) = events.next().await {
        match item {
            Ok(ev) => folder.on_event(ev),
            Err(e) if length_cut(&e) => return Ok(folder.finish(End::Length)),
            Err(e) => {
                tracing::warn!(error = %e, "upstream stream failed before the answer was complete");
                return Err(GatewayError::from(e));
            }
        }
    }
    Ok(folder.finish(End::Complete))
}

/// A folded (non-stream) answer: the JSON body, and the Kiro credits as `x-kiro-credits`.
pub fn answer_response(body: &serde_json::Value, credits: Option<f64>) -> Response<Body> {
    let mut r = Response::new(Body::from(body.to_string()));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(c) = credits {
        if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
            r.headers_mut().insert("x-kiro-credits", v);
        }
    }
    r
}

/// `data: {json}\n\n`
pub fn sse_data(v: &serde_json::Value) -> Bytes {
    let mut s = String::with_capacity(64);
    s.push_str("data: ");
    s.push_str(&v.to_string());
    s.push_str("\n\n");
    Bytes::from(s)
}

/// `event: {name}\ndata: {json}\n\n`
pub fn sse_event(name: &str, v: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {v}\n\n"))
}

/// Append `s` as a JSON string literal (quotes included): the hot path of every delta, done
/// without building a `serde_json::Value`.
pub fn push_json_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            use std::fmt::Write;
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// `{prefix}{32 hex}` ids.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    struct Echo;
    impl Encoder for Echo {
        fn on_event(&mut self, _ev: Event, out: &mut Vec<Bytes>) {
            out.push(Bytes::from_static(b"event\n\n"));
        }
        fn on_end(&mut self, _end: End, out: &mut Vec<Bytes>) {
            out.push(Bytes::from_static(b"end\n\n"));
        }
        fn on_error(&mut self, _err: GatewayError, out: &mut Vec<Bytes>) {
            out.push(Bytes::from_static(b"error\n\n"));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn silent_upstream_gets_keepalives_and_data_resets_the_timer() {
        let events: KiroEvents = Box::pin(
            futures_util::stream::once(async {
                Ok(Event::Text {
                    content: "a".into(),
                })
            })
            .chain(futures_util::stream::pending()),
        );
        let mut body = SseBody::new(events, Echo);
        assert_eq!(body.next().await.unwrap().unwrap(), "event\n\n");
        let before = tokio::time::Instant::now();
        assert_eq!(body.next().await.unwrap().unwrap(), ": keep-alive\n\n");
        assert!(before.elapsed() >= KEEPALIVE_INTERVAL);
        assert_eq!(body.next().await.unwrap().unwrap(), ": keep-alive\n\n");
        assert!(before.elapsed() >= KEEPALIVE_INTERVAL * 2);
    }

    #[test]
    fn dialect_of_a_request() {
        let r = |path: &str, anthropic: bool| {
            let mut b = http::Request::get(path);
            if anthropic {
                b = b.header("anthropic-version", "2023-06-01");
            }
            Dialect::guess(&b.body(()).unwrap())
        };
        assert_eq!(r("/v1/messages", false), Dialect::Anthropic);
        assert_eq!(r("/v1/chat/completions", false), Dialect::OpenAi);
        assert_eq!(r("/v1/chat/completions", true), Dialect::OpenAi);
        assert_eq!(r("/v1/models", true), Dialect::Anthropic);
        assert_eq!(r("/v1/models", false), Dialect::OpenAi);
    }

    #[tokio::test]
    async fn anthropic_keepalive_is_a_ping_event() {
        let meta = ResponseMeta {
            id: "msg_1".into(),
            created: 0,
            model: "m".into(),
            usage: usage::UsageTracker::new(1, 1),
        };
        let ping = anthropic::MessagesEncoder::new(meta).keepalive().unwrap();
        assert_eq!(ping, "event: ping\ndata: {\"type\":\"ping\"}\n\n");
    }
}
