//! Which public API a request speaks, and its errors rendered in that API's shape: a leaf that
//! every layer may use to answer in the caller's dialect.

#![deny(missing_docs)]

use http::{HeaderValue, Response};
use serde_json::{json, Value};

use crate::body::Body;
use crate::error::{ErrorKind, GatewayError};

/// Which public API a request speaks; decides the error shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI's chat completions and Responses APIs (`{"error": {...}}` errors).
    OpenAi,
    /// Anthropic's messages API (`{"type": "error", "error": {...}}` errors).
    Anthropic,
}

impl Dialect {
    /// `openai` or `anthropic` (the `dialect` label of the metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
        }
    }

    /// The dialect a path suggests, for the requests no route marks (unknown paths, a
    /// method a route does not take): `/messages` is Anthropic's, the rest OpenAI's.
    pub fn from_path(path: &str) -> Dialect {
        if path.contains("/messages") {
            Dialect::Anthropic
        } else {
            Dialect::OpenAi
        }
    }

    /// The dialect marked on a request, else a guess for requests no chat route marks (unknown
    /// paths, the shared `/v1/models`): the one its path implies, else Anthropic for a
    /// request that carries `anthropic-version`, else OpenAI. The chat stacks never guess:
    /// their outermost layer ([`crate::layers::DialectLayer`]) marks and renders.
    pub fn guess<B>(req: &http::Request<B>) -> Dialect {
        if let Some(d) = req.extensions().get::<Dialect>() {
            return *d;
        }
        let path = req.uri().path();
        match Dialect::from_path(path) {
            // only the shared routes (/v1/models, unknown ones) go by the header
            Dialect::OpenAi
                if !path.contains("/chat/completions")
                    && req.headers().contains_key("anthropic-version") =>
            {
                Dialect::Anthropic
            }
            d => d,
        }
    }

    /// The error as this dialect's JSON body.
    pub fn error_json(self, e: &GatewayError) -> serde_json::Value {
        match self {
            Dialect::OpenAi => openai_error_json(e),
            Dialect::Anthropic => serde_json::json!({
                "type": "error",
                "error": {"type": anthropic_error_type(e), "message": e.message()},
            }),
        }
    }

    /// A complete error response in this dialect. The error is also put into the response
    /// extensions so tracing and debug capture can see it without parsing the body.
    pub fn error_response(self, e: &GatewayError) -> Response<Body> {
        let body = self.error_json(e).to_string();
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = e.status();
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(s) = e.retry_after() {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
        }
        // the OpenAI and Anthropic SDKs (and Claude Code) obey this header over their own
        // status rules: without it they retry a 401 or a used-up quota's 429 several times
        r.headers_mut().insert(
            "x-should-retry",
            HeaderValue::from_static(if e.is_retryable() { "true" } else { "false" }),
        );
        r.extensions_mut().insert(e.clone());
        r
    }
}

fn anthropic_error_type(e: &GatewayError) -> &'static str {
    use ErrorKind as K;
    match e.kind() {
        K::InvalidRequest | K::MethodNotAllowed | K::UpgradeRequired => "invalid_request_error",
        K::Authentication => "authentication_error",
        K::Permission => "permission_error",
        K::NotFound => "not_found_error",
        K::RequestTooLarge => "request_too_large",
        K::RateLimit => "rate_limit_error",
        K::Overloaded => "overloaded_error",
        K::Timeout | K::Upstream | K::Internal | K::Unavailable => "api_error",
    }
}

/// `{"error":{"message","type","param","code"}}`
pub fn openai_error_json(e: &GatewayError) -> Value {
    let kind = match e.kind() {
        ErrorKind::InvalidRequest
        | ErrorKind::NotFound
        | ErrorKind::RequestTooLarge
        | ErrorKind::MethodNotAllowed
        | ErrorKind::UpgradeRequired => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::Permission => "permission_error",
        ErrorKind::RateLimit => "rate_limit_error",
        ErrorKind::Overloaded
        | ErrorKind::Unavailable
        | ErrorKind::Upstream
        | ErrorKind::Timeout
        | ErrorKind::Internal => "api_error",
    };
    // OpenAI reports a used-up quota with type and code `insufficient_quota`
    let kind = if e.code() == Some("insufficient_quota") {
        "insufficient_quota"
    } else {
        kind
    };
    json!({"error": {"message": e.message(), "type": kind, "param": e.param(), "code": e.code()}})
}
