//! The OpenAI Responses API (`POST /v1/responses`, `GET /v1/responses/{id}`): the third dialect
//! of the same translation design. The request becomes the shared
//! [`Conversation`](crate::api::conversation::Conversation) ([`convert`]); Kiro events become
//! Responses stream events or one response object ([`stream`]); finished responses are kept in
//! a [`ResponseStore`] so `previous_response_id` can chain and `GET` can fetch them: by default
//! the bounded in-memory [`MemoryResponseStore`] (lost on restart); `store: false`, what Codex
//! sends, keeps nothing.

pub mod convert;
pub mod stream;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use serde::Deserialize;
use serde_json::Value;

use crate::api::ResponseMeta;
use crate::error::GatewayError;

pub use stream::{ResponsesEncoder, ResponsesFolder};

/// A `POST /v1/responses` body. Fields the gateway has no use for are accepted and ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    #[serde(default)]
    pub input: Option<Value>,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    #[serde(default)]
    pub reasoning: Option<Value>,
    #[serde(default)]
    pub include: Option<Vec<String>>,
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub previous_response_id: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub text: Option<Value>,
    #[serde(default)]
    pub stream: bool,
    /// The store, attached by the translation layer before the request is converted.
    #[serde(skip)]
    pub store_handle: Option<ResponseStoreHandle>,
}

impl ResponsesRequest {
    /// `store` unless it is `false`.
    pub fn keeps(&self) -> bool {
        self.store != Some(false)
    }

    /// The input as a list of items (a string is one user message).
    pub fn input_items(&self) -> Result<Vec<Value>, GatewayError> {
        match &self.input {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![
                serde_json::json!({"type": "message", "role": "user", "content": s}),
            ]),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(_) => Err(GatewayError::invalid_request(
                "input must be a string or a list of input items",
            )
            .with_param("input")),
        }
    }
}

/// One kept response: the response object, and the conversation it ends (its input items,
/// those of the responses it chained from, and its own output items), for a follow-up.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The response object, as `GET /v1/responses/{id}` returns it.
    pub response: Value,
    /// The conversation it ends.
    pub items: Arc<Vec<Value>>,
}

/// Where finished responses are kept, by id.
///
/// The in-memory [`MemoryResponseStore`] is the default. A store shared by several gateways
/// (issue 21) must guarantee:
/// - **read-your-writes across gateways**: a response `put` when its stream ends is what
///   `get` returns on any gateway from then on (a client chains `previous_response_id` on
///   its next request, which may land elsewhere), e.g. one Redis key per id;
/// - **whole entries**: `get` returns a response with its complete conversation or nothing,
///   never a half-written entry;
/// - **bounded age and size**: entries expire after the configured TTL
///   (`RESPONSES_STORE_TTL_SECS`) and the store stays bounded (`RESPONSES_STORE_MAX`, a byte
///   budget); `get` of an expired or evicted id is `None` (the client gets a 404);
/// - **no blocking**: `put` runs when a stream ends and `get` before a request is
///   translated; neither may wait on another request.
pub trait ResponseStore: Send + Sync + std::fmt::Debug {
    /// Keep `response` and the conversation it ends under `id` (a store may decline: too
    /// large, or keeping nothing).
    fn put(&self, id: String, response: Value, items: Vec<Value>);
    /// The response kept under `id`, unless it expired or was evicted.
    fn get(&self, id: &str) -> Option<Stored>;
    /// Responses held (an estimate is fine: expired ones not yet dropped may count).
    fn len(&self) -> usize;
    /// Whether none is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The store the translation layer attaches to each Responses request: a cheap clone of one
/// `Arc<dyn ResponseStore>`. The default is a [`MemoryResponseStore`] with its default limits.
#[derive(Debug, Clone)]
pub struct ResponseStoreHandle(Arc<dyn ResponseStore>);

impl ResponseStoreHandle {
    /// A handle on `store`.
    pub fn new(store: Arc<dyn ResponseStore>) -> Self {
        ResponseStoreHandle(store)
    }

    /// Responses held (see [`ResponseStore::len`]).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Default for ResponseStoreHandle {
    fn default() -> Self {
        ResponseStoreHandle(Arc::new(MemoryResponseStore::default()))
    }
}

impl ResponseStore for ResponseStoreHandle {
    fn put(&self, id: String, response: Value, items: Vec<Value>) {
        self.0.put(id, response, items);
    }

    fn get(&self, id: &str) -> Option<Stored> {
        self.0.get(id)
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Bytes of kept responses (their conversations included) at most, whatever their count.
pub const STORE_MAX_BYTES: usize = 64 * 1024 * 1024;

/// One entry of the in-memory store.
#[derive(Debug)]
struct Entry {
    stored: Stored,
    at: Instant,
    /// serialised size, for the byte budget
    bytes: usize,
}

/// Finished responses in this process's memory, bounded in count and age
/// (`RESPONSES_STORE_MAX`, `RESPONSES_STORE_TTL_SECS`) and in bytes ([`STORE_MAX_BYTES`]);
/// the oldest goes first. Lost on restart.
#[derive(Debug)]
pub struct MemoryResponseStore {
    max: usize,
    ttl: Duration,
    inner: Mutex<(HashMap<String, Entry>, VecDeque<String>)>,
    bytes: std::sync::atomic::AtomicUsize,
}

impl Default for MemoryResponseStore {
    fn default() -> Self {
        MemoryResponseStore::new(1000, Duration::from_secs(3600))
    }
}

impl MemoryResponseStore {
    /// At most `max` responses, each for at most `ttl`.
    pub fn new(max: usize, ttl: Duration) -> Self {
        MemoryResponseStore {
            max,
            ttl,
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
            bytes: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<String, Entry>, VecDeque<String>)> {
        crate::lock(&self.inner)
    }
}

impl ResponseStore for MemoryResponseStore {
    fn put(&self, id: String, response: Value, items: Vec<Value>) {
        use std::sync::atomic::Ordering::Relaxed;
        let size =
            response.to_string().len() + items.iter().map(|i| i.to_string().len()).sum::<usize>();
        if self.max == 0 || size > STORE_MAX_BYTES {
            return;
        }
        let mut g = self.lock();
        let (map, order) = &mut *g;
        while map.len() >= self.max || self.bytes.load(Relaxed) + size > STORE_MAX_BYTES {
            match order.pop_front() {
                Some(old) => {
                    if let Some(e) = map.remove(&old) {
                        self.bytes.fetch_sub(e.bytes, Relaxed);
                    }
                }
                None => break,
            }
        }
        self.bytes.fetch_add(size, Relaxed);
        order.push_back(id.clone());
        map.insert(
            id,
            Entry {
                stored: Stored {
                    response,
                    items: Arc::new(items),
                },
                at: Instant::now(),
                bytes: size,
            },
        );
    }

    fn get(&self, id: &str) -> Option<Stored> {
        let mut g = self.lock();
        let (map, order) = &mut *g;
        let stale = map.get(id).is_some_and(|e| e.at.elapsed() > self.ttl);
        if stale {
            if let Some(e) = map.remove(id) {
                self.bytes
                    .fetch_sub(e.bytes, std::sync::atomic::Ordering::Relaxed);
            }
            order.retain(|x| x != id);
            return None;
        }
        map.get(id).map(|e| e.stored.clone())
    }

    fn len(&self) -> usize {
        self.lock().0.len()
    }
}

/// Marker type that plugs the Responses dialect into the translation layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAiResponses;

impl crate::api::DialectApi for OpenAiResponses {
    type Request = ResponsesRequest;
    type Encoder = ResponsesEncoder;
    type Folder = ResponsesFolder;
    const DIALECT: crate::api::Dialect = crate::api::Dialect::OpenAi;
    const ID_PREFIX: &'static str = "resp_";
    const ROUTE: &'static str = "/v1/responses";
    const MESSAGES: &'static str = "input";

    fn model(req: &Self::Request) -> &str {
        &req.model
    }

    fn is_stream(req: &Self::Request) -> bool {
        req.stream
    }

    fn bind(req: &mut Self::Request, responses: &ResponseStoreHandle) {
        req.store_handle = Some(responses.clone());
    }

    fn conversation(
        req: &Self::Request,
    ) -> Result<crate::api::conversation::Conversation, GatewayError> {
        convert::to_conversation(req)
    }

    /// `reasoning.effort` decides; `reasoning: null` or absent gets the configured default.
    fn reasoning(
        req: &Self::Request,
        defaults: crate::api::thinking::ThinkingDefaults,
    ) -> Option<crate::api::thinking::ReasoningAsk> {
        use crate::api::thinking::ReasoningAsk;
        let effort = req
            .reasoning
            .as_ref()
            .and_then(|r| r.get("effort"))
            .and_then(Value::as_str);
        match effort {
            Some(e) => defaults.for_effort(e).map(|budget| ReasoningAsk {
                budget,
                adaptive: false,
                effort: Some(e.to_owned()),
            }),
            None => defaults.default_budget().map(ReasoningAsk::budget),
        }
    }

    /// A streaming client (Codex) acts on `response.failed` codes, not on HTTP statuses: too
    /// long (`context_length_exceeded`: compact), throttled (`rate_limit_exceeded`, with "try
    /// again in N s": wait and retry), overloaded or upstream trouble. Bad requests stay HTTP
    /// 400s.
    fn failure(
        req: &Self::Request,
        err: &GatewayError,
    ) -> Option<http::Response<crate::api::Body>> {
        use crate::error::ErrorKind as K;
        let fits = err.code() == Some("context_length_exceeded")
            || matches!(
                err.kind(),
                K::RateLimit | K::Overloaded | K::Upstream | K::Timeout
            );
        if !req.stream || !fits || err.code() == Some("insufficient_quota") {
            return None;
        }
        let meta = ResponseMeta {
            id: crate::api::new_id("resp_"),
            created: crate::api::unix_now(),
            model: req.model.clone(),
            usage: crate::api::usage::UsageTracker::new(0, 0),
        };
        let mut enc = ResponsesEncoder::new(stream::Shape::of(req), meta);
        let e = match (err.kind(), err.retry_after()) {
            (K::RateLimit, Some(s)) => {
                let m = format!("{} Please try again in {s}s.", err.message());
                err.clone().with_message(m)
            }
            _ => err.clone(),
        };
        let mut out = Vec::new();
        crate::api::Encoder::on_error(&mut enc, e, &mut out);
        let body: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
        let mut r = http::Response::new(crate::api::Body::from(body));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        r.extensions_mut().insert(err.clone());
        Some(r)
    }

    fn encoder(req: &Self::Request, meta: ResponseMeta) -> Self::Encoder {
        ResponsesEncoder::new(stream::Shape::of(req), meta)
    }

    fn folder(req: &Self::Request, meta: ResponseMeta) -> Self::Folder {
        ResponsesFolder::new(stream::Shape::of(req), meta)
    }
}

/// `GET /v1/responses/{id}`: the kept response, or a 404 in OpenAI's shape.
pub fn retrieve(store: &dyn ResponseStore, id: &str) -> Result<Value, GatewayError> {
    store.get(id).map(|s| s.response).ok_or_else(|| {
        GatewayError::not_found(format!(
            "No response with id '{id}' is stored (responses are kept in memory, for a limited time, and only when `store` is not false)"
        ))
        .with_code("response_not_found")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_store_forgets_after_its_ttl_and_drops_the_oldest_first() {
        let s = MemoryResponseStore::new(2, Duration::from_secs(60));
        s.put("a".into(), serde_json::json!(1), vec![]);
        s.put("b".into(), serde_json::json!(2), vec![]);
        s.put("c".into(), serde_json::json!(3), vec![]);
        assert!(s.get("a").is_none(), "the oldest went first");
        assert_eq!(s.get("b").unwrap().response, 2);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(s.get("b").is_none() && s.get("c").is_none(), "past the TTL");
        let none = MemoryResponseStore::new(0, Duration::from_secs(60));
        none.put("a".into(), serde_json::json!(1), vec![]);
        assert!(none.is_empty());
    }

    /// A store plugged into the translation layer is the one the Responses dialect reads a
    /// `previous_response_id` from and writes the finished response to.
    #[tokio::test]
    async fn the_translation_layer_reads_and_writes_the_store_it_is_given() {
        use crate::kiro::{Event, GenerateRequest, GenerateResponse};
        use crate::layers::translate::{TranslateConfig, TranslateLayer};
        use tower::{Layer, ServiceExt};

        /// Knows one earlier response; records what is put.
        #[derive(Debug, Default)]
        struct Recording {
            puts: Mutex<Vec<String>>,
        }
        impl ResponseStore for Recording {
            fn put(&self, id: String, _response: Value, _items: Vec<Value>) {
                self.puts.lock().unwrap().push(id);
            }
            fn get(&self, id: &str) -> Option<Stored> {
                (id == "resp_earlier").then(|| Stored {
                    response: serde_json::json!({"id": id}),
                    items: Arc::new(vec![
                        serde_json::json!({"type": "message", "role": "user", "content": "the earlier question"}),
                        serde_json::json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "the earlier answer"}]}),
                    ]),
                })
            }
            fn len(&self) -> usize {
                self.puts.lock().unwrap().len()
            }
        }

        let store = Arc::new(Recording::default());
        let sent = Arc::new(Mutex::new(Vec::<u8>::new()));
        let upstream = {
            let sent = sent.clone();
            tower::service_fn(move |req: GenerateRequest| {
                *sent.lock().unwrap() = req.body.to_vec();
                async {
                    Ok::<_, crate::kiro::Error>(GenerateResponse {
                        status: http::StatusCode::OK,
                        headers: http::HeaderMap::new(),
                        events: Box::pin(futures_util::stream::iter(vec![Ok(Event::Text {
                            content: "hi".into(),
                        })])),
                    })
                }
            })
        };
        let svc = TranslateLayer::<OpenAiResponses>::new(TranslateConfig {
            responses: ResponseStoreHandle::new(store.clone()),
            ..Default::default()
        })
        .layer(upstream);
        let body: ResponsesRequest = serde_json::from_value(serde_json::json!({
            "model": "claude-sonnet-4-5",
            "input": "and now?",
            "previous_response_id": "resp_earlier"
        }))
        .unwrap();
        let mut req = http::Request::new(body);
        req.extensions_mut()
            .insert(crate::models::ResolvedModel::unknown("claude-sonnet-4-5"));
        let resp = svc.oneshot(req).await.unwrap();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let answer: Value = serde_json::from_slice(&bytes).unwrap();
        let sent = String::from_utf8(sent.lock().unwrap().clone()).unwrap();
        assert!(sent.contains("the earlier question"), "{sent}");
        assert!(sent.contains("the earlier answer"), "{sent}");
        assert_eq!(
            *store.puts.lock().unwrap(),
            [answer["id"].as_str().unwrap()]
        );
    }
}
