//! The OpenAI Responses API (`POST /v1/responses`, `GET /v1/responses/{id}`): the third dialect
//! of the same translation design. The request becomes the shared
//! [`Conversation`](crate::api::conversation::Conversation) ([`convert`]); Kiro events become
//! Responses stream events or one response object ([`stream`]); finished responses are kept in
//! a bounded in-memory [`ResponseStore`] so `previous_response_id` can chain and `GET` can
//! fetch them (lost on restart; `store: false`, what Codex sends, keeps nothing).

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
    pub store_handle: Option<Arc<ResponseStore>>,
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
    pub response: Value,
    pub items: Arc<Vec<Value>>,
    at: Instant,
    /// serialised size, for the byte budget
    bytes: usize,
}

/// Bytes of kept responses (their conversations included) at most, whatever their count.
pub const STORE_MAX_BYTES: usize = 64 * 1024 * 1024;

/// Finished responses, bounded in count and age (`RESPONSES_STORE_MAX`,
/// `RESPONSES_STORE_TTL_SECS`) and in bytes ([`STORE_MAX_BYTES`]); the oldest goes first. In
/// memory only.
#[derive(Debug)]
pub struct ResponseStore {
    max: usize,
    ttl: Duration,
    inner: Mutex<(HashMap<String, Stored>, VecDeque<String>)>,
    bytes: std::sync::atomic::AtomicUsize,
}

impl Default for ResponseStore {
    fn default() -> Self {
        ResponseStore::new(1000, Duration::from_secs(3600))
    }
}

impl ResponseStore {
    pub fn new(max: usize, ttl: Duration) -> Self {
        ResponseStore {
            max,
            ttl,
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
            bytes: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<String, Stored>, VecDeque<String>)> {
        crate::lock(&self.inner)
    }

    pub fn put(&self, id: String, response: Value, items: Vec<Value>) {
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
                    if let Some(s) = map.remove(&old) {
                        self.bytes.fetch_sub(s.bytes, Relaxed);
                    }
                }
                None => break,
            }
        }
        self.bytes.fetch_add(size, Relaxed);
        order.push_back(id.clone());
        map.insert(
            id,
            Stored {
                response,
                items: Arc::new(items),
                at: Instant::now(),
                bytes: size,
            },
        );
    }

    pub fn get(&self, id: &str) -> Option<Stored> {
        let mut g = self.lock();
        let (map, order) = &mut *g;
        let stale = map.get(id).is_some_and(|s| s.at.elapsed() > self.ttl);
        if stale {
            if let Some(s) = map.remove(id) {
                self.bytes
                    .fetch_sub(s.bytes, std::sync::atomic::Ordering::Relaxed);
            }
            order.retain(|x| x != id);
            return None;
        }
        map.get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    fn bind(req: &mut Self::Request, responses: &std::sync::Arc<ResponseStore>) {
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
pub fn retrieve(store: &ResponseStore, id: &str) -> Result<Value, GatewayError> {
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
        let s = ResponseStore::new(2, Duration::from_secs(60));
        s.put("a".into(), serde_json::json!(1), vec![]);
        s.put("b".into(), serde_json::json!(2), vec![]);
        s.put("c".into(), serde_json::json!(3), vec![]);
        assert!(s.get("a").is_none(), "the oldest went first");
        assert_eq!(s.get("b").unwrap().response, 2);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(s.get("b").is_none() && s.get("c").is_none(), "past the TTL");
        let none = ResponseStore::new(0, Duration::from_secs(60));
        none.put("a".into(), serde_json::json!(1), vec![]);
        assert!(none.is_empty());
    }
}
