//! `GatewayError`: the only error type a client ever sees, rendered by its dialect (see
//! [`crate::dialect`]). A leaf module: the conversions from the upstream's errors live with
//! them ([`crate::kiro::error`]).

#![deny(missing_docs)]

use http::StatusCode;

/// The class of an error, independent of dialect. It decides the HTTP status (see
/// [`ErrorKind::status`]) and the error `type` each dialect reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: the request is malformed or asks for something the gateway cannot do.
    InvalidRequest,
    /// 401: the client's API key is missing or wrong.
    Authentication,
    /// 403: the key is fine but the action is not allowed (or the Kiro account is barred).
    Permission,
    /// 404: no such route, model or stored response.
    NotFound,
    /// 405: the route exists, not with this method.
    MethodNotAllowed,
    /// 413: the body is over `MAX_BODY_BYTES`.
    RequestTooLarge,
    /// 426: the route is served over another protocol (a WebSocket upgrade, say).
    UpgradeRequired,
    /// 429: throttled, or a used-up quota.
    RateLimit,
    /// 500: the gateway's own failure.
    Internal,
    /// 502: the Kiro service failed or answered something unusable.
    Upstream,
    /// 503: no capacity now (every account cooling, too many bodies in flight).
    Overloaded,
    /// 503: the gateway cannot serve until its operator acts (its Kiro credentials were
    /// refused); reported as an API error, not an overload.
    Unavailable,
    /// 504: the Kiro service did not answer in time.
    Timeout,
}

impl ErrorKind {
    /// The HTTP status of this kind of error.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Authentication => StatusCode::UNAUTHORIZED,
            ErrorKind::Permission => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            ErrorKind::RateLimit => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Upstream => StatusCode::BAD_GATEWAY,
            ErrorKind::Overloaded | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The kind of an error status from_status from elsewhere (the Kiro service's own status).
    pub fn of_status(status: StatusCode) -> ErrorKind {
        match status.as_u16() {
            401 => ErrorKind::Authentication,
            403 => ErrorKind::Permission,
            404 => ErrorKind::NotFound,
            405 => ErrorKind::MethodNotAllowed,
            504 => ErrorKind::Timeout,
            413 => ErrorKind::RequestTooLarge,
            426 => ErrorKind::UpgradeRequired,
            429 => ErrorKind::RateLimit,
            503 | 529 => ErrorKind::Overloaded,
            400..=499 => ErrorKind::InvalidRequest,
            _ => ErrorKind::Upstream,
        }
    }
}

/// An error with the status and message a client should get.
///
/// The status follows from the kind ([`GatewayError::new`]), or, for a status from_status from
/// the Kiro service, the kind from the status ([`GatewayError::from_status`]): the two cannot
/// disagree. Fields are read through accessors and set through the `with_*` builders.
#[derive(Debug, Clone)]
pub struct GatewayError {
    status: StatusCode,
    kind: ErrorKind,
    message: String,
    param: Option<String>,
    code: Option<String>,
    retry_after: Option<u64>,
    retry: Option<bool>,
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status.as_u16())
    }
}

impl std::error::Error for GatewayError {}

/// A service that cannot fail (an axum handler) stacks under the layers that can.
impl From<std::convert::Infallible> for GatewayError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

impl GatewayError {
    /// An error of `kind`, with the kind's status.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        GatewayError {
            status: kind.status(),
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
            retry: None,
        }
    }

    /// An error status from_status as it came (an error of the Kiro service): the kind follows
    /// from it. A status that is not an error becomes a 502.
    pub fn from_status(status: StatusCode, message: impl Into<String>) -> Self {
        let status = if status.is_client_error() || status.is_server_error() {
            status
        } else {
            StatusCode::BAD_GATEWAY
        };
        let mut e = Self::new(ErrorKind::of_status(status), message);
        e.status = status;
        e
    }

    /// 400.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }

    /// The conversation is over what Kiro takes: worded and coded so clients recognise it and
    /// compact (Claude Code looks for "prompt is too long"; OpenAI clients for
    /// `context_length_exceeded`).
    pub fn context_too_long(detail: impl std::fmt::Display) -> Self {
        Self::invalid_request(format!("prompt is too long: {detail}"))
            .with_code("context_length_exceeded")
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// 401 `invalid_api_key`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Authentication, message).with_code("invalid_api_key")
    }

    /// 413 naming the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            ErrorKind::RequestTooLarge,
            format!("request body exceeds the gateway's limit of {limit} bytes (MAX_BODY_BYTES)"),
        )
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// A layer found a request-context value missing that a layer above it must insert: a
    /// stack assembled in the wrong order. A 500 that names both, never a silent default.
    pub fn missing_context(what: &str, inserted_by: &str) -> Self {
        Self::internal(format!(
            "the gateway's layers are stacked wrongly: {what} is missing from the request; mount {inserted_by} above this layer"
        ))
        .with_code("gateway_misconfigured")
    }

    /// The request field the error is about (OpenAI `param`).
    pub fn with_param(mut self, p: impl Into<String>) -> Self {
        self.param = Some(p.into());
        self
    }

    /// A machine-readable code (OpenAI `code`), e.g. `invalid_api_key`, `model_not_found`.
    pub fn with_code(mut self, c: impl Into<String>) -> Self {
        self.code = Some(c.into());
        self
    }

    /// Seconds the client may wait before retrying (sent as `retry-after`).
    pub fn with_retry_after(mut self, secs: Option<u64>) -> Self {
        self.retry_after = secs;
        self
    }

    /// Whether a retry may help, when the status alone does not say (a 403 that a token
    /// refresh can fix); see [`GatewayError::is_retryable`].
    pub fn with_retry(mut self, retry: bool) -> Self {
        self.retry = Some(retry);
        self
    }

    /// The same error with another message (the kind, status and code stay).
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The class of the error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message for the client.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The request field the error is about.
    pub fn param(&self) -> Option<&str> {
        self.param.as_deref()
    }

    /// The machine-readable code.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// Seconds the client may wait before retrying.
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// Whether the same request may succeed if sent again: the one classification behind the
    /// `x-should-retry` header of every error answer. Throttles (429), timeouts (408, 504) and
    /// server errors (5xx) may pass on a retry; a used-up quota's 429 and every other client
    /// error (400, 401, 403, 404, 405, 413, 422, …) will not, except where
    /// [`Self::with_retry`] says otherwise (a 403 that a token refresh can fix).
    pub fn is_retryable(&self) -> bool {
        if let Some(r) = self.retry {
            return r;
        }
        if self.code.as_deref() == Some("insufficient_quota") {
            return false;
        }
        let s = self.status.as_u16();
        s == 408 || s == 429 || s >= 500
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_follows_the_kind_and_a_from_status_status_gives_the_kind() {
        assert_eq!(GatewayError::new(ErrorKind::Unavailable, "x").status(), 503);
        assert_eq!(GatewayError::unauthorized("x").status(), 401);
        let r = GatewayError::from_status(StatusCode::CONFLICT, "x");
        assert_eq!(
            (r.status().as_u16(), r.kind()),
            (409, ErrorKind::InvalidRequest)
        );
        let r = GatewayError::from_status(StatusCode::OK, "x");
        assert_eq!((r.status().as_u16(), r.kind()), (502, ErrorKind::Upstream));
        let r = GatewayError::from_status(StatusCode::SERVICE_UNAVAILABLE, "x");
        assert_eq!(r.kind(), ErrorKind::Overloaded);
        for k in [
            ErrorKind::InvalidRequest,
            ErrorKind::RateLimit,
            ErrorKind::Timeout,
        ] {
            assert_eq!(ErrorKind::of_status(k.status()), k);
        }
    }

    #[test]
    fn a_missing_layer_is_a_500_that_names_it() {
        let e = GatewayError::missing_context("ResolvedModel", "ModelNameLayer");
        assert_eq!(e.status(), 500);
        assert!(e.message().contains("ResolvedModel") && e.message().contains("ModelNameLayer"));
    }
}
