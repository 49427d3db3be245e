//! `GatewayError`: the only error type a client ever sees, rendered by its dialect.

use http::StatusCode;

use crate::auth::AuthError;
use crate::kiro;

/// The class of an error, independent of dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    RequestTooLarge,
    RateLimit,
    Overloaded,
    Upstream,
    Timeout,
    Internal,
}

/// An error with the status and message a client should get.
#[derive(Debug, Clone)]
pub struct GatewayError {
    pub status: StatusCode,
    pub kind: ErrorKind,
    pub message: String,
    /// The request field the error is about (OpenAI `param`).
    pub param: Option<String>,
    /// A machine-readable code (OpenAI `code`), e.g. `invalid_api_key`, `model_not_found`.
    pub code: Option<String>,
    /// Seconds the client may wait before retrying (sent as `retry-after`).
    pub retry_after: Option<u64>,
    /// Whether a retry may help, when the status alone does not say (a 403 that a token
    /// refresh can fix); see [`GatewayError::is_retryable`].
    pub retry: Option<bool>,
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status.as_u16())
    }
}

impl std::error::Error for GatewayError {}

impl GatewayError {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        GatewayError {
            status,
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
            retry: None,
        }
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidRequest, message)
    }

    /// The conversation is over what Kiro takes: worded and coded so clients recognise it and
    /// compact (Claude Code looks for "prompt is too long"; OpenAI clients for
    /// `context_length_exceeded`).
    pub fn context_too_long(detail: impl std::fmt::Display) -> Self {
        Self::invalid_request(format!("prompt is too long: {detail}"))
            .with_code("context_length_exceeded")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorKind::Authentication, message)
            .with_code("invalid_api_key")
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::RequestTooLarge,
            format!("request body exceeds the gateway's limit of {limit} bytes (MAX_BODY_BYTES)"),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Internal,
            message,
        )
    }

    pub fn with_param(mut self, p: impl Into<String>) -> Self {
        self.param = Some(p.into());
        self
    }

    pub fn with_code(mut self, c: impl Into<String>) -> Self {
        self.code = Some(c.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the same request may succeed if sent again: the one classification behind the
    /// `x-should-retry` header of every error answer. Throttles (429), timeouts (408, 504) and
    /// server errors (5xx) may pass on a retry; a used-up quota's 429 and every other client
    /// error (400, 401, 403, 404, 405, 413, 422, …) will not, except where [`Self::retry`] says
    /// otherwise (a 403 that a token refresh can fix).
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

/// What clients get when the Kiro auth service refuses the gateway's refresh token.
pub const KIRO_CREDENTIALS_REFUSED: &str = "The gateway's Kiro credentials were refused by the Kiro auth service (its refresh token is revoked or expired). This is not about your API key: the gateway's operator must sign in to Kiro again; the gateway's log and /health/accounts say how.";

impl From<AuthError> for GatewayError {
    fn from(e: AuthError) -> Self {
        match &e {
            // the gateway's own credential, not the client's key: a 401 would make the SDKs
            // tell their user that *their* key is wrong. The detail (source, file path, the
            // service's words, the fix) goes to the log and /health/accounts, not to clients.
            AuthError::Refused { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::Internal,
                KIRO_CREDENTIALS_REFUSED,
            )
            .with_code("kiro_credentials_refused"),
            // the gateway's own upstream credential is refused: the client's key was fine, so
            // not a 401 that would send it to re-enter its key
            AuthError::ApiKeyRefused { .. } => Self::new(
                StatusCode::FORBIDDEN,
                ErrorKind::Permission,
                format!("Kiro credentials need attention: {e}"),
            )
            .with_code("kiro_api_key_invalid"),
            AuthError::Transient { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, ErrorKind::Upstream, e.to_string())
            }
            AuthError::NoCredentials(_) | AuthError::Load { .. } | AuthError::Persist { .. } => {
                Self::internal(e.to_string())
            }
        }
    }
}

fn kind_for_status(status: StatusCode) -> ErrorKind {
    match status.as_u16() {
        400 | 402 | 409 | 413 | 422 => ErrorKind::InvalidRequest,
        401 => ErrorKind::Authentication,
        403 => ErrorKind::Permission,
        404 => ErrorKind::NotFound,
        429 => ErrorKind::RateLimit,
        503 | 529 => ErrorKind::Overloaded,
        _ => ErrorKind::Upstream,
    }
}

impl From<kiro::Error> for GatewayError {
    fn from(e: kiro::Error) -> Self {
        use kiro::Error as E;
        match e {
            E::Status(s) => {
                let too_long = s.reason.as_deref() == Some("CONTENT_LENGTH_EXCEEDS_THRESHOLD")
                    || s.message.contains("Input is too long");
                if too_long {
                    // worded so clients recognise it and compact (Claude Code matches "Prompt is
                    // too long"), with Kiro's own words kept
                    return Self::context_too_long(format!(
                        "the conversation is larger than the model accepts (Kiro: {})",
                        s.message
                    ));
                }
                if s.is_quota_exhausted() {
                    // a 429 clients know as "out of quota" (OpenAI `insufficient_quota`,
                    // Anthropic `rate_limit_error`); no Retry-After: waiting will not help
                    return Self::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        ErrorKind::RateLimit,
                        format!(
                            "Monthly request limit exceeded: the Kiro account has used its monthly quota (Kiro {}: {}{})",
                            s.status.as_u16(),
                            s.message,
                            s.reason.as_deref().map(|r| format!(", reason: {r}")).unwrap_or_default()
                        ),
                    )
                    .with_code("insufficient_quota");
                }
                if s.is_suspended() {
                    return Self::new(
                        StatusCode::FORBIDDEN,
                        ErrorKind::Permission,
                        format!(
                            "Kiro API error 403: {}{} (the Kiro account is suspended or locked; refreshing the token cannot fix this)",
                            s.message,
                            s.reason.as_deref().map(|r| format!(" (reason: {r})")).unwrap_or_default()
                        ),
                    )
                    .with_code(
                        s.reason
                            .clone()
                            .or(s.error_type.clone())
                            .unwrap_or_else(|| "account_suspended".into()),
                    );
                }
                let message = match s.reason.as_deref() {
                    Some(r) => format!("{} (reason: {r})", s.message),
                    None => s.message.clone(),
                };
                let status = if s.status.is_client_error() || s.status.is_server_error() {
                    s.status
                } else {
                    StatusCode::BAD_GATEWAY
                };
                // a 403 over an invalid or expired token: the next request refreshes it
                let refreshable = s.is_invalid_token();
                let mut g = Self::new(
                    status,
                    kind_for_status(status),
                    format!("Kiro API error {}: {message}", s.status.as_u16()),
                )
                .with_code(
                    s.reason
                        .clone()
                        .or(s.error_type.clone())
                        .unwrap_or_else(|| "kiro_api_error".into()),
                );
                // whole seconds, rounded up: a client that waits that long has waited enough
                g.retry_after = s
                    .retry_after
                    .map(|d| d.as_millis().div_ceil(1000).max(1) as u64);
                if refreshable {
                    g.retry = Some(true);
                }
                g
            }
            E::Connect { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, ErrorKind::Upstream, e.to_string())
                    .with_code("upstream_unreachable")
            }
            E::FirstByteTimeout(_) => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                ErrorKind::Timeout,
                format!("{e} (FIRST_TOKEN_TIMEOUT), after all retries"),
            )
            .with_code("upstream_timeout"),
            E::IdleTimeout(_) => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                ErrorKind::Timeout,
                e.to_string(),
            )
            .with_code("upstream_timeout"),
            E::Auth(a) => a.into(),
            E::Request(m) => Self::internal(m),
            E::NoAccount {
                retry_after,
                rate_limited,
                quota_exhausted,
                ..
            } => {
                let (status, kind, code) = if rate_limited {
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        ErrorKind::RateLimit,
                        "all_accounts_rate_limited",
                    )
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrorKind::Overloaded,
                        "no_account_available",
                    )
                };
                let mut g = Self::new(status, kind, e.to_string()).with_code(code);
                g.retry_after = retry_after.map(|d| d.as_millis().div_ceil(1000).max(1) as u64);
                if quota_exhausted {
                    // parked until the quota resets (days away): as final as one account's
                    // used-up quota
                    g.retry = Some(false);
                }
                g
            }
            // a throttle or an overload reported inside the stream is that, not a broken stream
            E::Event(kiro::events::EventError::Exception(ref x)) if x.is_throttling() => {
                let mut g = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorKind::RateLimit,
                    e.to_string(),
                )
                .with_code("rate_limited");
                g.retry_after = x.retry_after_ms.map(|ms| ms.div_ceil(1000).max(1));
                g
            }
            E::Event(kiro::events::EventError::Exception(ref x)) if x.is_unavailable() => {
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorKind::Overloaded,
                    e.to_string(),
                )
                .with_code("upstream_unavailable")
            }
            E::Body(_) | E::Decode(_) | E::Event(_) | E::Truncated => {
                let code = match &e {
                    E::Truncated => "upstream_truncated",
                    E::Decode(_) => "upstream_corrupt_stream",
                    _ => "upstream_stream_error",
                };
                Self::new(StatusCode::BAD_GATEWAY, ErrorKind::Upstream, e.to_string())
                    .with_code(code)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn from_status(code: u16, body: &'static str) -> GatewayError {
        kiro::Error::Status(Box::new(kiro::UpstreamStatus::from_parts(
            StatusCode::from_u16(code).unwrap(),
            &http::HeaderMap::new(),
            Bytes::from_static(body.as_bytes()),
        )))
        .into()
    }

    #[test]
    fn too_long_input_is_a_400_clients_recognise() {
        let g = from_status(
            400,
            r#"{"message":"Input is too long.","reason":"CONTENT_LENGTH_EXCEEDS_THRESHOLD"}"#,
        );
        assert_eq!(g.status, 400);
        assert!(g.message.starts_with("prompt is too long"));
        assert_eq!(g.code.as_deref(), Some("context_length_exceeded"));
        assert_eq!(g.kind, ErrorKind::InvalidRequest);
    }

    #[test]
    fn upstream_statuses_keep_their_status_and_message() {
        let g = from_status(429, r#"{"message":"Rate exceeded","reason":null}"#);
        assert_eq!((g.status.as_u16(), g.kind), (429, ErrorKind::RateLimit));
        assert!(g.message.contains("Rate exceeded"));
        let g = from_status(
            403,
            r#"{"message":"Account suspended","reason":"TEMPORARILY_SUSPENDED"}"#,
        );
        assert_eq!(g.status, 403);
        assert_eq!(g.kind, ErrorKind::Permission);
        assert!(g.message.contains("TEMPORARILY_SUSPENDED"));
        assert!(g.message.contains("Account suspended"));
    }

    #[test]
    fn a_used_up_monthly_quota_is_a_429_insufficient_quota() {
        for (code, body) in [
            (
                402,
                r#"{"message":"quota","reason":"MONTHLY_REQUEST_COUNT"}"#,
            ),
            (
                400,
                r#"{"__type":"ServiceQuotaExceededException","message":"quota","reason":"MONTHLY_REQUEST_COUNT"}"#,
            ),
        ] {
            let g = from_status(code, body);
            assert_eq!((g.status.as_u16(), g.kind), (429, ErrorKind::RateLimit));
            assert_eq!(g.code.as_deref(), Some("insufficient_quota"));
            assert_eq!(g.retry_after, None);
            assert!(g.message.contains("Monthly request limit"), "{}", g.message);
        }
    }
}
