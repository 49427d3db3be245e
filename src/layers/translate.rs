//! `TranslateLayer<D>`: a dialect request in, a Kiro call below, the dialect's response out.
//!
//! The layer turns `http::Request<D::Request>` into a [`GenerateRequest`] (through the shared
//! [`conversation`](crate::api::conversation) model), calls the inner Kiro service, and answers
//! with the dialect's SSE stream (events forwarded as they arrive, pulled only as fast as the
//! client reads) or with one JSON answer folded from the same events. Every answer carries
//! [`MODEL_HEADER`] (`x-kiro-model`) with the upstream model id that served it. A dialect plugs
//! in by implementing [`DialectApi`]; nothing else is dialect-specific.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::api::conversation::{self, BuildOptions, Conversation};
use crate::api::thinking::{self, ReasoningAsk, ReasoningMode, ThinkingDefaults, ThinkingMode};
use crate::api::usage::{estimate_request, UsageTracker};
use crate::api::{fold, new_id, unix_now, Body, ResponseMeta, SseBody};
use crate::auth::TokenManager;
use crate::context::{BodySize, CaptureHandle, ClientName, ConversationKey, RequestRecord};
use crate::error::GatewayError;
use crate::kiro::{self, GenerateRequest, GenerateResponse, KiroBody};
use crate::models::ResolvedModel;

/// Response header naming the upstream model id that served a chat answer (`x-kiro-model`).
pub const MODEL_HEADER: &str = "x-kiro-model";

pub use crate::api::DialectApi;

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
    pub responses: crate::api::responses::ResponseStoreHandle,
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
    let floor = conversation::payload_floor(&conv);
    if too_big(floor) && !cfg.auto_trim_payload {
        // refused before the translated request is built: no copy of a huge body is made
        return Err(GatewayError::context_too_long(format!(
            "the conversation is at least {floor} bytes as a Kiro request, over the {limit}-byte limit Kiro accepts (KIRO_MAX_PAYLOAD_BYTES); shorten or compact it"
        )));
    }
    let build = |conv: Conversation| {
        let (req, src) = conversation::to_kiro_traced(conv, &opts)?;
        let bytes = serialise(&req)?;
        Ok::<_, GatewayError>((req, src, bytes))
    };
    let mut trimmed = 0usize;
    let (mut kiro_req, sources, bytes) = if cfg.auto_trim_payload && limit > 0 {
        let (built, dropped) = trim_to_fit(conv, floor, limit, build)?;
        trimmed = dropped;
        built
    } else {
        build(conv)?
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

/// A translated request: the typed body, the client message index of each turn, the bytes.
type Built = (
    kiro::types::GenerateAssistantRequest,
    Vec<Option<usize>>,
    Vec<u8>,
);

/// `AUTO_TRIM_PAYLOAD`: the request built from `conv` with the fewest oldest turns dropped
/// that fits `limit` (or with every turn but the last dropped, when nothing fits), and how
/// many client messages were dropped.
///
/// The turns are found once; the number to drop is looked for by bisection, starting past
/// the counts whose [`payload_floor`](conversation::payload_floor) alone is over the limit, so
/// a long conversation is built a logarithmic number of times, never once per turn. A
/// request that fits as it is is built once.
fn trim_to_fit(
    conv: Conversation,
    floor: usize,
    limit: usize,
    build: impl Fn(Conversation) -> Result<Built, GatewayError>,
) -> Result<(Built, usize), GatewayError> {
    let starts = conversation::turn_starts(&conv);
    // dropping the k oldest turns keeps messages[starts[k-1]..]
    let first_kept = |k: usize| if k == 0 { 0 } else { starts[k - 1] };
    // floors of what is kept after dropping k turns, for every k, in one pass from the end
    let mut suffix = vec![0usize; conv.messages.len() + 1];
    for (i, m) in conv.messages.iter().enumerate().rev() {
        suffix[i] = suffix[i + 1] + conversation::message_floor(m);
    }
    let fixed = floor - suffix[0];
    let kept = |k: usize| {
        let mut c = Conversation {
            system: conv.system.clone(),
            messages: conv.messages[first_kept(k)..].to_vec(),
            tools: conv.tools.clone(),
            tool_choice: conv.tool_choice.clone(),
            instructions: conv.instructions.clone(),
        };
        c.messages.shrink_to_fit();
        c
    };
    // the smallest k whose floor fits (the floors only shrink as k grows)
    let max = starts.len();
    let mut lo = (0..=max)
        .find(|&k| fixed + suffix[first_kept(k)] <= limit)
        .unwrap_or(max);
    // most requests fit as they are: one build
    let first = build(kept(lo))?;
    if first.2.len() <= limit || lo == max {
        return Ok((first, first_kept(lo)));
    }
    drop(first);
    lo += 1;
    let mut hi = max;
    // invariant: every k < lo is over the limit; `best` is the build for `hi` once known
    let mut best: Option<Built> = None;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let b = build(kept(mid))?;
        if b.2.len() > limit {
            lo = mid + 1;
        } else {
            hi = mid;
            best = Some(b);
        }
    }
    let built = match best {
        Some(b) => b,
        None => build(kept(hi))?,
    };
    Ok((built, first_kept(hi)))
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
    type Error = GatewayError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, GatewayError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(GatewayError::from)
    }

    fn call(&mut self, req: Request<D::Request>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let cfg = self.cfg.clone();
        Box::pin(async move {
            let (parts, mut body) = req.into_parts();
            D::bind(&mut body, &cfg.responses);
            let Some(resolved) = parts.extensions.get::<ResolvedModel>().cloned() else {
                return Err(GatewayError::missing_context(
                    "the resolved model (ResolvedModel)",
                    "ModelNameLayer",
                ));
            };
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
                // for the Kiro side: the upstream capture and the pool record into it
                if let Some(c) = &capture {
                    g.extensions.insert(c.clone());
                }
                if let Some((p, retry)) = pooled {
                    // only with several accounts: the session header, else the prompt's key,
                    // with the client key's name
                    let key = ConversationKey::from_headers(&parts.headers).unwrap_or(p.key);
                    let client = parts.extensions.get::<ClientName>().map_or("", |c| &*c.0);
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
                }
                g
            };
            let large = parts
                .extensions
                .get::<BodySize>()
                .is_some_and(|b| b.0 >= super::decode::OFFLOAD_BODY_BYTES);
            let (body, prepared) = if large {
                // building the Kiro request of a large body takes CPU: on the blocking pool,
                // so the async workers go on serving every other connection meanwhile
                let (cfg, resolved) = (cfg.clone(), resolved.clone());
                let work = tokio::task::spawn_blocking(move || {
                    let prepared = prepare::<D>(&body, &resolved, &cfg);
                    (body, prepared)
                });
                work.await.map_err(|e| {
                    GatewayError::internal(format!("the translation of the request failed: {e}"))
                })?
            } else {
                let prepared = prepare::<D>(&body, &resolved, &cfg);
                (body, prepared)
            };
            let prepared = match prepared {
                Ok(x) => x,
                Err(e) => return D::failure(&body, &e).ok_or(e),
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
                    let e = GatewayError::from(e);
                    return D::failure(&body, &e).ok_or(e);
                }
            };
            let events = resp.events;
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
                            r.set_stream_failure(e.status().as_u16(), e.message())
                        }))
                    }
                    None => sse,
                };
                sse.into_response()
            } else {
                fold(events, D::folder(&body, meta)).await?
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::openai::{ChatCompletionRequest, OpenAiChat};
    use crate::dialect::Dialect;
    use tower::ServiceExt;

    /// Where the conversion of the last [`Probe`] request ran.
    static RAN_ON: std::sync::Mutex<Option<std::thread::ThreadId>> = std::sync::Mutex::new(None);

    /// The OpenAI dialect, noting the thread its conversion runs on, then refusing the request
    /// (so nothing goes upstream).
    struct Probe;

    impl DialectApi for Probe {
        type Request = ChatCompletionRequest;
        type Encoder = <OpenAiChat as DialectApi>::Encoder;
        type Folder = <OpenAiChat as DialectApi>::Folder;
        const DIALECT: Dialect = Dialect::OpenAi;
        const ID_PREFIX: &'static str = "chatcmpl-";
        const ROUTE: &'static str = "/v1/chat/completions";

        fn model(req: &Self::Request) -> &str {
            OpenAiChat::model(req)
        }
        fn is_stream(req: &Self::Request) -> bool {
            OpenAiChat::is_stream(req)
        }
        fn conversation(_req: &Self::Request) -> Result<Conversation, GatewayError> {
            *RAN_ON.lock().unwrap() = Some(std::thread::current().id());
            Err(GatewayError::invalid_request("probe"))
        }
        fn reasoning(_req: &Self::Request, _d: ThinkingDefaults) -> Option<ReasoningAsk> {
            None
        }
        fn encoder(req: &Self::Request, meta: ResponseMeta) -> Self::Encoder {
            OpenAiChat::encoder(req, meta)
        }
        fn folder(req: &Self::Request, meta: ResponseMeta) -> Self::Folder {
            OpenAiChat::folder(req, meta)
        }
    }

    // a current-thread runtime: every task runs on the test's thread, blocking work elsewhere
    #[tokio::test]
    async fn large_requests_are_translated_off_the_async_worker() {
        let worker = std::thread::current().id();
        let body: ChatCompletionRequest = serde_json::from_value(serde_json::json!({
            "model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}))
        .unwrap();
        for (size, off_worker) in [
            (1000, false),
            (crate::layers::decode::OFFLOAD_BODY_BYTES, true),
        ] {
            let svc = TranslateLayer::<Probe>::new(TranslateConfig::default()).layer(
                tower::service_fn(|_req: GenerateRequest| async {
                    Err::<GenerateResponse, _>(kiro::Error::Request("not called".into()))
                }),
            );
            let mut req = Request::new(body.clone());
            req.extensions_mut().insert(crate::layers::BodySize(size));
            req.extensions_mut()
                .insert(ResolvedModel::unknown("claude-sonnet-4-5"));
            let err = svc.oneshot(req).await.unwrap_err();
            assert_eq!(err.status(), 400);
            let ran_on = RAN_ON.lock().unwrap().take().unwrap();
            assert_eq!(ran_on != worker, off_worker, "body of {size} bytes");
        }
    }

    #[test]
    fn a_conversation_far_over_the_payload_limit_is_refused_before_it_is_built() {
        let body: ChatCompletionRequest = serde_json::from_value(serde_json::json!({
            "model": "claude-sonnet-4-5",
            "messages": [{"role": "user", "content": "x".repeat(5000)}]}))
        .unwrap();
        let cfg = TranslateConfig {
            max_payload_bytes: 1000,
            ..Default::default()
        };
        let resolved = ResolvedModel::unknown("claude-sonnet-4-5");
        let Err(e) = prepare::<OpenAiChat>(&body, &resolved, &cfg) else {
            panic!("accepted")
        };
        assert_eq!(e.code(), Some("context_length_exceeded"));
        // (the floor counts the text and the system prompt; the serialised request is larger)
        let floor: usize = e
            .message()
            .strip_prefix("prompt is too long: the conversation is at least ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{}", e.message()));
        assert!((5000..6000).contains(&floor), "{}", e.message());
    }

    #[test]
    fn trimming_keeps_the_most_turns_that_fit_in_few_builds() {
        let mut messages = Vec::new();
        for i in 0..200 {
            messages.push(serde_json::json!({"role": "user", "content": format!("question {i} {}", "q".repeat(100))}));
            messages.push(serde_json::json!({"role": "assistant", "content": format!("answer {i} {}", "a".repeat(100))}));
        }
        messages.push(serde_json::json!({"role": "user", "content": "last"}));
        let body: ChatCompletionRequest = serde_json::from_value(serde_json::json!({
            "model": "claude-sonnet-4-5", "messages": messages}))
        .unwrap();
        let resolved = ResolvedModel::unknown("claude-sonnet-4-5");
        let limit = 10_000;
        let cfg = TranslateConfig {
            max_payload_bytes: limit,
            auto_trim_payload: true,
            ..Default::default()
        };
        let p = prepare::<OpenAiChat>(&body, &resolved, &cfg).unwrap();
        assert!(p.body.len() <= limit);
        assert!(p.trimmed_messages > 0 && p.trimmed_messages.is_multiple_of(2));
        // one turn more would not have fitted
        let mut more: ChatCompletionRequest = body.clone();
        more.messages.drain(..p.trimmed_messages - 2);
        let untrimmed = TranslateConfig {
            max_payload_bytes: 0,
            ..Default::default()
        };
        let bigger = prepare::<OpenAiChat>(&more, &resolved, &untrimmed).unwrap();
        assert!(bigger.body.len() > limit, "{}", bigger.body.len());
        let builds = std::cell::Cell::new(0);
        let conv = OpenAiChat::conversation(&body).unwrap();
        let floor = conversation::payload_floor(&conv);
        let (_, dropped) = trim_to_fit(conv, floor, limit, |c| {
            builds.set(builds.get() + 1);
            let (req, src) = conversation::to_kiro_traced(c, &BuildOptions::default())?;
            let bytes = serde_json::to_vec(&req).unwrap();
            Ok((req, src, bytes))
        })
        .unwrap();
        assert!(dropped > 0);
        // bisection over 200 turns: about log2(200) builds, never one per turn
        assert!(builds.get() <= 10, "{} builds", builds.get());
    }
}
