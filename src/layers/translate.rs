//! `TranslateLayer<D>`: a dialect request in, a Kiro call below, the dialect's response out.
//!
//! The layer turns `http::Request<D::Request>` into a [`GenerateRequest`] (through the shared
//! [`conversation`](crate::api::conversation) model), calls the inner Kiro service, and answers
//! with the dialect's SSE stream (events forwarded as they arrive, pulled only as fast as the
//! client reads) or with one JSON answer folded from the same events. Every answer carries
//! [`MODEL_HEADER`] (`x-kiro-model`) with the upstream model id that served it. A dialect plugs
//! in by implementing [`DialectApi`]; nothing else is dialect-specific.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::capture::CaptureHandle;
use super::metrics::RequestRecord;
use crate::accounts::{ConversationKey, KiroBody};
use crate::api::conversation::{self, BuildOptions, Conversation};
use crate::api::thinking::{self, ReasoningAsk, ReasoningMode, ThinkingDefaults, ThinkingMode};
use crate::api::usage::{estimate_request, UsageTracker};
use crate::api::{fold, new_id, unix_now, Body, Dialect, Encoder, Folder, ResponseMeta, SseBody};
use crate::auth::TokenManager;
use crate::error::GatewayError;
use crate::kiro::{self, Event, GenerateRequest, GenerateResponse, KiroEvents};
use crate::models::ResolvedModel;

/// Response header naming the upstream model id that served a chat answer (`x-kiro-model`).
pub const MODEL_HEADER: &str = "x-kiro-model";

/// What a public dialect provides to the translation layer.
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
    /// Give the request what it needs of the layer's settings before it is converted (the
    /// Responses dialect takes its store); nothing by default.
    fn bind(_req: &mut Self::Request, _cfg: &TranslateConfig) {}
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

/// Settings of the translation.
#[derive(Clone, Default)]
pub struct TranslateConfig {
    /// Source of the profile ARN put into requests (per the account's policy).
    pub tokens: Option<TokenManager>,
    /// `origin` of every `userInputMessage`: the client service's
    /// [`body_requirements`](crate::kiro::KiroClient::body_requirements) (empty: `AI_EDITOR`).
    pub origin: String,
    /// `TOOL_DESCRIPTION_MAX_LENGTH` (0: never move descriptions).
    pub tool_description_max: usize,
    /// `FAKE_REASONING` / `FAKE_REASONING_MAX_TOKENS`.
    pub thinking: ThinkingDefaults,
    /// `FAKE_REASONING_HANDLING`.
    pub thinking_mode: ThinkingMode,
    /// `REASONING_MODE`: native reasoning controls or prompt tags.
    pub reasoning_mode: ReasoningMode,
    /// Cancelled when the server stops waiting for open streams at shutdown.
    pub close_streams: tokio_util::sync::CancellationToken,
    /// `KIRO_MAX_PAYLOAD_BYTES`: largest translated request sent upstream (0: no limit). The
    /// service answers larger ones with an opaque 400; the gateway says why instead.
    pub max_payload_bytes: usize,
    /// `AUTO_TRIM_PAYLOAD`: over the limit, drop the oldest turns whole instead of refusing.
    pub auto_trim_payload: bool,
    /// Stream bodies alive.
    pub open_streams: crate::api::StreamGauge,
    /// Finished Responses-API responses, for `previous_response_id` and `GET`.
    pub responses: Arc<crate::api::responses::ResponseStore>,
    /// Several accounts below: each request carries its [`ConversationKey`] and its typed
    /// [`KiroBody`], so the pool can keep a conversation on one account and give an account
    /// with another profile ARN or protocol its own body.
    pub pooled: bool,
}

/// See the module docs.
pub struct TranslateLayer<D> {
    cfg: Arc<TranslateConfig>,
    _d: PhantomData<fn() -> D>,
}

impl<D> Clone for TranslateLayer<D> {
    fn clone(&self) -> Self {
        TranslateLayer {
            cfg: self.cfg.clone(),
            _d: PhantomData,
        }
    }
}

impl<D> TranslateLayer<D> {
    pub fn new(cfg: TranslateConfig) -> Self {
        TranslateLayer {
            cfg: Arc::new(cfg),
            _d: PhantomData,
        }
    }
}

impl<S, D> Layer<S> for TranslateLayer<D> {
    type Service = TranslateService<S, D>;
    fn layer(&self, inner: S) -> Self::Service {
        TranslateService {
            inner,
            cfg: self.cfg.clone(),
            _d: PhantomData,
        }
    }
}

pub struct TranslateService<S, D> {
    inner: S,
    cfg: Arc<TranslateConfig>,
    _d: PhantomData<fn() -> D>,
}

impl<S: Clone, D> Clone for TranslateService<S, D> {
    fn clone(&self) -> Self {
        TranslateService {
            inner: self.inner.clone(),
            cfg: self.cfg.clone(),
            _d: PhantomData,
        }
    }
}

/// The upstream request for a dialect request: its bytes, the prompt estimate, and how
/// reasoning was asked for.
pub struct Prepared {
    pub body: Bytes,
    pub prompt_estimate: u64,
    /// Reasoning asked for with prompt tags: the answer must be split.
    pub thinking: bool,
    /// Reasoning asked for natively (`additionalModelRequestFields`).
    pub native: bool,
    /// The same request without the signed reasoning of its history, when it carried some:
    /// sent once if the service refuses the first.
    pub without_reasoning: Option<Bytes>,
    /// Client messages dropped to fit the payload limit (`AUTO_TRIM_PAYLOAD`).
    pub trimmed_messages: usize,
    /// With [`TranslateConfig::pooled`]: the typed requests `body` and `without_reasoning`
    /// were serialised from, and the conversation's key (system prompt and first user
    /// message).
    pub pooled: Option<PooledParts>,
}

/// See [`Prepared::pooled`].
#[derive(Debug, Clone)]
pub struct PooledParts {
    pub body: KiroBody,
    pub without_reasoning: Option<KiroBody>,
    pub key: ConversationKey,
}

/// A conversation's key from its system prompt and first user message, which every later
/// turn repeats.
fn conversation_key(conv: &Conversation) -> ConversationKey {
    let first = conv
        .messages
        .iter()
        .find(|m| m.role == crate::api::conversation::Role::User)
        .map_or("", |m| m.text.as_str());
    ConversationKey::of(&[conv.system.as_bytes(), first.as_bytes()])
}

/// `additionalModelRequestFields` for this request, or `None` for prompt tags.
fn native_reasoning(
    ask: &ReasoningAsk,
    resolved: &ResolvedModel,
    cfg: &TranslateConfig,
) -> Option<serde_json::Value> {
    let schema = resolved.reasoning_schema.as_deref();
    match cfg.reasoning_mode {
        ReasoningMode::Prompt => None,
        ReasoningMode::Auto => schema.and_then(|s| thinking::native_fields(s, ask, cfg.thinking)),
        ReasoningMode::Native => Some(
            schema
                .and_then(|s| thinking::native_fields(s, ask, cfg.thinking))
                .unwrap_or_else(|| thinking::default_native_fields(ask)),
        ),
    }
}

/// Build the upstream request for a dialect request.
pub fn prepare<D: DialectApi>(
    body: &D::Request,
    resolved: &ResolvedModel,
    cfg: &TranslateConfig,
) -> Result<Prepared, GatewayError> {
    let mut conv = D::conversation(body)?;
    let key = cfg.pooled.then(|| conversation_key(&conv));
    let ask = D::reasoning(body, cfg.thinking);
    let native = ask
        .as_ref()
        .and_then(|a| native_reasoning(a, resolved, cfg));
    let prompt_thinking = ask.is_some() && native.is_none();
    if let (Some(a), true) = (&ask, prompt_thinking) {
        let inj = thinking::injection(a.budget);
        conv.system = if conv.system.is_empty() {
            inj
        } else {
            format!("{inj}\n\n{}", conv.system)
        };
    }
    let opts = BuildOptions {
        model_id: resolved.kiro_id.clone(),
        origin: cfg.origin.clone(),
        profile_arn: cfg
            .tokens
            .as_ref()
            .and_then(TokenManager::profile_arn_for_requests),
        conversation_id: uuid::Uuid::new_v4().to_string(),
        tool_description_max: cfg.tool_description_max,
        send_reasoning: native.is_some(),
        additional_fields: native.clone(),
    };
    let serialise = |r: &kiro::types::GenerateAssistantRequest| {
        serde_json::to_vec(r).map_err(|e| {
            GatewayError::internal(format!("could not serialise the Kiro request: {e}"))
        })
    };
    let limit = cfg.max_payload_bytes;
    let too_big = |len: usize| limit > 0 && len > limit;
    let mut trimmed = 0usize;
    let (mut kiro_req, sources, bytes) = if cfg.auto_trim_payload {
        // drop the oldest turns whole until the request fits; the last turn always stays
        let mut conv = conv;
        loop {
            let (req, src) = conversation::to_kiro_traced(conv.clone(), &opts)?;
            let bytes = serialise(&req)?;
            if !too_big(bytes.len()) {
                break (req, src, bytes);
            }
            match conversation::drop_oldest_turn(&mut conv) {
                0 => break (req, src, bytes),
                n => trimmed += n,
            }
        }
    } else {
        let (req, src) = conversation::to_kiro_traced(conv, &opts)?;
        let bytes = serialise(&req)?;
        (req, src, bytes)
    };
    if trimmed > 0 {
        tracing::info!(
            messages = trimmed,
            bytes = bytes.len(),
            "dropped the oldest turns to fit KIRO_MAX_PAYLOAD_BYTES (AUTO_TRIM_PAYLOAD)"
        );
    }
    if too_big(bytes.len()) {
        return Err(GatewayError::context_too_long(format!(
            "the conversation is {} bytes as a Kiro request, over the {limit}-byte limit Kiro accepts (KIRO_MAX_PAYLOAD_BYTES); shorten or compact it",
            bytes.len()
        )));
    }
    crate::api::preflight::check(&kiro_req, &sources, D::MESSAGES)?;
    let estimate = estimate_request(&kiro_req);
    let mut without_reasoning = None;
    let mut stripped = false;
    // the typed body must be the one sent first: copied only when stripping will change it
    let signed_history = kiro_req.conversation_state.history.iter().any(|h| {
        matches!(h, kiro::types::HistoryMessage::AssistantResponseMessage(a) if a.reasoning_content.is_some())
    });
    let first = (key.is_some() && signed_history).then(|| kiro_req.clone());
    for h in &mut kiro_req.conversation_state.history {
        if let kiro::types::HistoryMessage::AssistantResponseMessage(a) = h {
            stripped |= a.reasoning_content.take().is_some();
        }
    }
    if stripped {
        without_reasoning = Some(Bytes::from(serialise(&kiro_req)?));
    }
    let pooled = key.map(|key| {
        let (body, without) = match first {
            Some(first) => (first, Some(kiro_req)),
            None => (kiro_req, None),
        };
        PooledParts {
            body: KiroBody {
                request: Arc::new(body),
            },
            without_reasoning: without.map(|r| KiroBody {
                request: Arc::new(r),
            }),
            key,
        }
    });
    Ok(Prepared {
        pooled,
        body: Bytes::from(bytes),
        prompt_estimate: estimate,
        thinking: prompt_thinking,
        native: native.is_some(),
        without_reasoning,
        trimmed_messages: trimmed,
    })
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

impl<S, D> Service<Request<D::Request>> for TranslateService<S, D>
where
    D: DialectApi,
    S: Service<GenerateRequest, Response = GenerateResponse, Error = kiro::Error>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // the Kiro services below are always ready; a failure would surface in call
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Request<D::Request>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let cfg = self.cfg.clone();
        Box::pin(async move {
            let (parts, mut body) = req.into_parts();
            D::bind(&mut body, &cfg);
            let resolved = parts
                .extensions
                .get::<ResolvedModel>()
                .cloned()
                .unwrap_or_else(|| ResolvedModel::unknown(D::model(&body)));
            let capture = parts.extensions.get::<CaptureHandle>().cloned();
            let record = parts.extensions.get::<RequestRecord>().cloned();
            if let Some(r) = &record {
                r.set_model(&resolved.kiro_id);
            }
            // the layers below (retry, pool, auth) count attempts and retries into the record;
            // the pool reads the conversation key and the typed body
            let upstream_request = |bytes: Bytes, pooled: Option<(&PooledParts, bool)>| {
                let mut g = GenerateRequest::new(bytes);
                if let Some(r) = &record {
                    g.extensions.insert(r.clone());
                }
                if let Some((p, retry)) = pooled {
                    // only with several accounts: the session header, else the prompt's key,
                    // with the client key's name
                    let key = ConversationKey::from_headers(&parts.headers).unwrap_or(p.key);
                    let client = parts
                        .extensions
                        .get::<crate::layers::ClientName>()
                        .map_or("", |c| &*c.0);
                    g.extensions.insert(ConversationKey::of(&[
                        client.as_bytes(),
                        &key.0.to_le_bytes(),
                    ]));
                    let body = if retry {
                        p.without_reasoning.as_ref()
                    } else {
                        Some(&p.body)
                    };
                    if let Some(b) = body {
                        g.extensions.insert(b.clone());
                    }
                    if let Some(c) = &capture {
                        g.extensions.insert(c.clone());
                    }
                }
                g
            };
            let prepared = match prepare::<D>(&body, &resolved, &cfg) {
                Ok(x) => x,
                Err(e) => {
                    return Ok(
                        D::failure(&body, &e).unwrap_or_else(|| D::DIALECT.error_response(&e))
                    )
                }
            };
            let (bytes, estimate) = (prepared.body.clone(), prepared.prompt_estimate);
            if let Some(c) = &capture {
                c.set_kiro_body(&bytes);
            }
            tracing::debug!(model = %resolved.kiro_id, bytes = bytes.len(), stream = D::is_stream(&body), "calling Kiro");
            let pooled = prepared.pooled.as_ref();
            let upstream = upstream_request(bytes, pooled.map(|p| (p, false)));
            let mut result = inner.call(upstream).await;
            let refused = matches!(&result, Err(kiro::Error::Status(s)) if s.status == http::StatusCode::BAD_REQUEST);
            if let (true, Some(retry)) = (refused, prepared.without_reasoning.clone()) {
                {
                    tracing::info!(
                        "Kiro refused the signed reasoning sent back in history; retrying once without it"
                    );
                    if let Some(c) = &capture {
                        c.log("retrying without the signed reasoning of the history");
                        c.set_kiro_body(&retry);
                    }
                    let mut inner2 = inner.clone();
                    result = inner2
                        .call(upstream_request(retry, pooled.map(|p| (p, true))))
                        .await;
                }
            }
            let resp = match result {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "Kiro call failed");
                    if let Some(c) = &capture {
                        c.log(&format!("upstream failed: {e}"));
                    }
                    let e = GatewayError::from(e);
                    return Ok(
                        D::failure(&body, &e).unwrap_or_else(|| D::DIALECT.error_response(&e))
                    );
                }
            };
            let events = match capture {
                Some(c) => captured(resp.events, c),
                None => resp.events,
            };
            let events = if prepared.thinking {
                thinking::split_thinking(events, cfg.thinking_mode)
            } else if prepared.native {
                thinking::handle_native(events, cfg.thinking_mode)
            } else {
                events
            };
            let mut usage = UsageTracker::new(estimate, resolved.max_input_tokens);
            if let Some(r) = &record {
                usage.report_to(r.usage().clone());
            }
            // the upstream model that serves the answer, whatever the client called it
            let served_by = http::HeaderValue::from_str(&resolved.kiro_id).ok();
            let meta = ResponseMeta {
                id: new_id(D::ID_PREFIX),
                created: unix_now(),
                model: resolved.requested,
                usage,
            };
            let mut response = if D::is_stream(&body) {
                let sse = SseBody::new(events, D::encoder(&body, meta))
                    .close_on(cfg.close_streams.clone())
                    .counted(&cfg.open_streams);
                let sse = match &record {
                    Some(r) => {
                        let r = r.clone();
                        sse.on_failure(Box::new(move |e: &GatewayError| {
                            r.set_stream_failure(e.status.as_u16(), &e.message)
                        }))
                    }
                    None => sse,
                };
                sse.into_response()
            } else {
                fold(events, D::folder(&body, meta), D::DIALECT).await
            };
            if let Some(v) = served_by {
                response.headers_mut().insert(MODEL_HEADER, v);
            }
            if prepared.trimmed_messages > 0 {
                response.headers_mut().insert(
                    "x-kiro-trimmed-messages",
                    http::HeaderValue::from(prepared.trimmed_messages),
                );
            }
            Ok(response)
        })
    }
}
