//! `kiro::Error`: everything that can go wrong between the gateway and the Kiro service.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::events::{EventError, StreamException};
use super::eventstream::DecodeError;
use crate::error::{ErrorKind, GatewayError};

/// A credential problem, worded for the person who has to fix it. Never carries a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// Nothing configured at all.
    #[error("{0}")]
    NoCredentials(String),
    /// A configured source could not be read.
    #[error("could not read credentials from {origin}: {detail}")]
    Load { origin: String, detail: String },
    /// The auth service refused the refresh token (revoked, expired, rotated away).
    #[error("the Kiro auth service refused the refresh token from {origin} ({status}: {message}); {hint}")]
    Refused {
        origin: String,
        status: u16,
        message: String,
        hint: String,
    },
    /// The refresh could not be done right now (network, 429, 5xx); a later try may work.
    #[error("refreshing the Kiro access token from {origin} failed: {detail}")]
    Transient { origin: String, detail: String },
    /// The service refused the Kiro API key (`KIRO_API_KEY`). There is nothing to refresh:
    /// the key itself is wrong, revoked or not entitled.
    #[error("Kiro refused the API key from KIRO_API_KEY ({status}: {message}); check that the key is complete and not revoked, and that the account's plan allows API keys (Kiro Pro+ tiers)")]
    ApiKeyRefused { status: u16, message: String },
    /// A rotated token could not be written back.
    #[error("could not write the refreshed token back to {origin}: {detail}")]
    Persist { origin: String, detail: String },
}

impl AuthError {
    /// A refresh that may succeed when tried again.
    pub fn is_transient(&self) -> bool {
        matches!(self, AuthError::Transient { .. })
    }
}

/// A boxed error from the transport stack (hyper, rustls, the proxy connector).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error between the gateway and the Kiro service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request never got an answer: refused connection, DNS, TLS, proxy.
    #[error("could not reach the Kiro service at {url}: {detail}")]
    Connect { url: String, detail: String },
    /// The service answered with a non-success status.
    #[error("{0}")]
    Status(Box<UpstreamStatus>),
    /// No response headers or first frame within the first-token timeout.
    #[error("the Kiro service sent nothing within {0:?}")]
    FirstByteTimeout(Duration),
    /// The stream stalled longer than the idle timeout between frames.
    #[error("the Kiro stream stalled for more than {0:?}")]
    IdleTimeout(Duration),
    /// The body failed while it was being read (reset, protocol error).
    #[error("the Kiro stream broke: {0}")]
    Body(String),
    /// The bytes are not a valid event stream (CRC, length, header).
    #[error("the Kiro stream is corrupt: {0}")]
    Decode(#[from] DecodeError),
    /// A frame decoded but its content is not a valid event.
    #[error("{0}")]
    Event(EventError),
    /// The body ended before the events that close a normal answer.
    #[error("the Kiro stream ended before the answer was complete")]
    Truncated,
    /// Getting or refreshing the access token failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The request could not be built (a bad configured URL, say).
    #[error("invalid upstream request: {0}")]
    Request(String),
    /// No account of the pool can serve now (see [`crate::accounts`]).
    #[error("no Kiro account can serve this request now: {detail}")]
    NoAccount {
        /// When the first account is back, when that is known.
        retry_after: Option<Duration>,
        /// Every account is out for a throttle or a used-up quota.
        rate_limited: bool,
        /// Every account is out for a used-up quota: a retry cannot help before one is back.
        quota_exhausted: bool,
        detail: String,
    },
}

impl From<EventError> for Error {
    fn from(e: EventError) -> Self {
        Error::Event(e)
    }
}

impl Error {
    /// The upstream exception carried by the stream, if that is what this is.
    pub fn stream_exception(&self) -> Option<&StreamException> {
        match self {
            Error::Event(EventError::Exception(e)) => Some(e),
            _ => None,
        }
    }

    /// Whether a fresh attempt of the same request may succeed (before anything was forwarded).
    pub fn is_retryable(&self) -> bool {
        self.failure().is_retryable()
    }
}

/// A non-success answer of the service, with what its JSON body says.
#[derive(Debug, Clone)]
pub struct UpstreamStatus {
    pub status: StatusCode,
    /// `message` of the JSON body, or the raw text.
    pub message: String,
    /// `reason` of the JSON body (`INVALID_MODEL_ID`, `MONTHLY_REQUEST_COUNT`, …).
    pub reason: Option<String>,
    /// `x-amzn-ErrorType` header or `__type` member, without the `:http://...` suffix.
    pub error_type: Option<String>,
    /// A retry hint from `retry-after`/`retry-after-ms` headers or `retryAfterMilliseconds`.
    pub retry_after: Option<Duration>,
    /// The body as received (bounded).
    pub body: Bytes,
}

impl std::fmt::Display for UpstreamStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Kiro service answered {}: {}",
            self.status.as_u16(),
            self.message
        )?;
        if let Some(r) = &self.reason {
            write!(f, " (reason: {r})")?;
        }
        Ok(())
    }
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default, alias = "Message")]
    message: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default, rename = "__type")]
    error_type: Option<String>,
    #[serde(default, rename = "retryAfterMilliseconds")]
    retry_after_ms: Option<u64>,
}

impl UpstreamStatus {
    /// Build from a status, headers and the (bounded) body.
    pub fn from_parts(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Self {
        let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
        let parsed = parsed.unwrap_or_default();
        let message = parsed.message.clone().unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&body).trim().to_owned();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_owned()
            } else {
                text
            }
        });
        let error_type = headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or(parsed.error_type)
            .map(|t| t.split(':').next().unwrap_or_default().to_owned())
            .map(|t| t.rsplit('#').next().unwrap_or_default().to_owned());
        let retry_after = retry_hint(headers).or(parsed.retry_after_ms.map(Duration::from_millis));
        UpstreamStatus {
            status,
            message,
            reason: parsed.reason,
            error_type,
            retry_after,
            body,
        }
    }

    /// 403 whose message says the bearer token is invalid or expired: a refresh may fix it.
    /// Suspended or locked accounts and other authorisation errors are not this case.
    pub fn is_invalid_token(&self) -> bool {
        if self.status != StatusCode::FORBIDDEN {
            return false;
        }
        let m = self.message.to_ascii_lowercase();
        !self.is_suspended() && (m.contains("token") || m.contains("expired"))
    }

    /// 403 that says the account is suspended or locked (spec 7.1): nothing on our side
    /// (refresh, another key) can fix it.
    pub fn is_suspended(&self) -> bool {
        if self.status != StatusCode::FORBIDDEN {
            return false;
        }
        let m = self.message.to_ascii_lowercase();
        m.contains("suspend")
            || m.contains("locked")
            || self
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("SUSPENDED"))
            || self
                .error_type
                .as_deref()
                .is_some_and(|t| t.contains("Suspended"))
    }

    /// The monthly request quota is used up (spec 7.1: reason `MONTHLY_REQUEST_COUNT`, seen as
    /// 402 or as 400 `ServiceQuotaExceededException`). Waiting minutes will not fix it, so it
    /// is never retried.
    pub fn is_quota_exhausted(&self) -> bool {
        self.reason.as_deref() == Some("MONTHLY_REQUEST_COUNT")
            || self
                .error_type
                .as_deref()
                .is_some_and(|t| t == "ServiceQuotaExceededException")
            || self.status == StatusCode::PAYMENT_REQUIRED
    }

    /// 429 (except a monthly quota) and 5xx.
    pub fn is_retryable(&self) -> bool {
        !self.is_quota_exhausted()
            && (self.status == StatusCode::TOO_MANY_REQUESTS || self.status.is_server_error())
    }
}

/// A retry hint from the response headers: `retry-after-ms` (milliseconds), `retry-after`
/// (seconds, possibly fractional, or an HTTP date) or `x-ratelimit-reset-after` (seconds).
/// The service is not known to send any of them (spec 7.1); peers honour all three.
pub fn retry_hint(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let secs = |v: &str| {
        v.parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(86_400.0)))
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_millis(ms));
    }
    if let Some(v) = text("retry-after") {
        if let Some(d) = secs(v) {
            return Some(d);
        }
        // an HTTP date ("Wed, 21 Oct 2015 07:28:00 GMT"): the wait is the time until then
        if let Ok(at) =
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822)
        {
            let now = time::OffsetDateTime::now_utc();
            let wait = (at - now).max(time::Duration::ZERO);
            return Some(Duration::from_secs_f64(wait.as_seconds_f64().min(86_400.0)));
        }
    }
    text("x-ratelimit-reset-after").and_then(secs)
}

/// What an upstream failure means, for every part of the gateway that acts on it: the retry
/// layer (what to retry), the account pool (what to hold against an account) and the metrics
/// (why a call was retried). The one classifier of [`Error`]s; see [`Error::failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 429 or a throttling exception, with the service's wait hint when it gave one.
    Throttle(Option<Duration>),
    /// The monthly quota is used up: waiting minutes does not help.
    Quota,
    /// The account is suspended or locked: nothing on the gateway's side helps.
    Suspended,
    /// A 403 over an invalid or expired access token: one refresh may fix it.
    InvalidToken,
    /// The account's credentials were refused or cannot be loaded: its operator must act.
    Credentials,
    /// 5xx, or an internal-error or service-unavailable exception.
    Unavailable,
    /// Nothing arrived within the first-token timeout.
    Timeout,
    /// No answer at all (connect, DNS, TLS), or a refresh that failed in transit.
    Transient,
    /// The stream broke, was corrupt or was cut short after it started.
    Broken,
    /// No account of the pool can serve now: the pool already failed over or waited, so
    /// retrying at once does not help.
    NoAccount,
    /// The request's own problem (a 4xx, a request that cannot be built) or the gateway's
    /// (a token that cannot be written back): says nothing about the account.
    Client,
}

impl Failure {
    /// Whether a fresh attempt of the same request may succeed (before anything was
    /// forwarded): throttles, 5xx, timeouts and transport failures.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Failure::Throttle(_) | Failure::Unavailable | Failure::Timeout | Failure::Transient
        )
    }
}

impl Error {
    /// What this failure means (see [`Failure`]).
    pub fn failure(&self) -> Failure {
        match self {
            Error::Status(s) if s.is_quota_exhausted() => Failure::Quota,
            Error::Status(s) if s.is_suspended() => Failure::Suspended,
            Error::Status(s) if s.is_invalid_token() => Failure::InvalidToken,
            Error::Status(s) if s.status == StatusCode::TOO_MANY_REQUESTS => {
                Failure::Throttle(s.retry_after)
            }
            Error::Status(s) if s.status.is_server_error() => Failure::Unavailable,
            Error::Status(_) | Error::Request(_) => Failure::Client,
            Error::Auth(AuthError::Transient { .. }) => Failure::Transient,
            Error::Auth(AuthError::Persist { .. }) => Failure::Client,
            Error::Auth(_) => Failure::Credentials,
            Error::Connect { .. } => Failure::Transient,
            Error::FirstByteTimeout(_) => Failure::Timeout,
            Error::NoAccount { .. } => Failure::NoAccount,
            Error::Event(EventError::Exception(x)) if x.is_throttling() => {
                Failure::Throttle(x.retry_after_ms.map(Duration::from_millis))
            }
            Error::Event(EventError::Exception(x))
                if x.is_unavailable() || x.is_internal_error() =>
            {
                Failure::Unavailable
            }
            Error::IdleTimeout(_)
            | Error::Body(_)
            | Error::Decode(_)
            | Error::Event(_)
            | Error::Truncated => Failure::Broken,
        }
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
            AuthError::Refused { .. } => {
                Self::new(ErrorKind::Unavailable, KIRO_CREDENTIALS_REFUSED)
                    .with_code("kiro_credentials_refused")
            }
            // the gateway's own upstream credential is refused: the client's key was fine, so
            // not a 401 that would send it to re-enter its key
            AuthError::ApiKeyRefused { .. } => Self::new(
                ErrorKind::Permission,
                format!("Kiro credentials need attention: {e}"),
            )
            .with_code("kiro_api_key_invalid"),
            AuthError::Transient { .. } => Self::new(ErrorKind::Upstream, e.to_string()),
            AuthError::NoCredentials(_) | AuthError::Load { .. } | AuthError::Persist { .. } => {
                Self::internal(e.to_string())
            }
        }
    }
}

impl From<Error> for GatewayError {
    fn from(e: Error) -> Self {
        use Error as E;
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
                // a 403 over an invalid or expired token: the next request refreshes it
                let refreshable = s.is_invalid_token();
                // whole seconds, rounded up: a client that waits that long has waited enough
                let g = Self::from_status(
                    s.status,
                    format!("Kiro API error {}: {message}", s.status.as_u16()),
                )
                .with_code(
                    s.reason
                        .clone()
                        .or(s.error_type.clone())
                        .unwrap_or_else(|| "kiro_api_error".into()),
                )
                .with_retry_after(
                    s.retry_after
                        .map(|d| d.as_millis().div_ceil(1000).max(1) as u64),
                );
                if refreshable {
                    g.with_retry(true)
                } else {
                    g
                }
            }
            E::Connect { .. } => {
                Self::new(ErrorKind::Upstream, e.to_string()).with_code("upstream_unreachable")
            }
            E::FirstByteTimeout(_) => Self::new(
                ErrorKind::Timeout,
                format!("{e} (FIRST_TOKEN_TIMEOUT), after all retries"),
            )
            .with_code("upstream_timeout"),
            E::IdleTimeout(_) => {
                Self::new(ErrorKind::Timeout, e.to_string()).with_code("upstream_timeout")
            }
            E::Auth(a) => a.into(),
            E::Request(m) => Self::internal(m),
            E::NoAccount {
                retry_after,
                rate_limited,
                quota_exhausted,
                ..
            } => {
                let (kind, code) = if rate_limited {
                    (ErrorKind::RateLimit, "all_accounts_rate_limited")
                } else {
                    (ErrorKind::Overloaded, "no_account_available")
                };
                let g = Self::new(kind, e.to_string())
                    .with_code(code)
                    .with_retry_after(
                        retry_after.map(|d| d.as_millis().div_ceil(1000).max(1) as u64),
                    );
                if quota_exhausted {
                    // parked until the quota resets (days away): as final as one account's
                    // used-up quota
                    g.with_retry(false)
                } else {
                    g
                }
            }
            // a throttle or an overload reported inside the stream is that, not a broken stream
            E::Event(EventError::Exception(ref x)) if x.is_throttling() => {
                Self::new(ErrorKind::RateLimit, e.to_string())
                    .with_code("rate_limited")
                    .with_retry_after(x.retry_after_ms.map(|ms| ms.div_ceil(1000).max(1)))
            }
            E::Event(EventError::Exception(ref x)) if x.is_unavailable() => {
                Self::new(ErrorKind::Overloaded, e.to_string()).with_code("upstream_unavailable")
            }
            E::Body(_) | E::Decode(_) | E::Event(_) | E::Truncated => {
                let code = match &e {
                    E::Truncated => "upstream_truncated",
                    E::Decode(_) => "upstream_corrupt_stream",
                    _ => "upstream_stream_error",
                };
                Self::new(ErrorKind::Upstream, e.to_string()).with_code(code)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_service_errors() {
        let h = HeaderMap::new();
        let bad_token = UpstreamStatus::from_parts(
            StatusCode::FORBIDDEN,
            &h,
            Bytes::from_static(
                br#"{"message":"The bearer token included in the request is invalid.","reason":null}"#,
            ),
        );
        assert!(bad_token.is_invalid_token());
        assert!(!bad_token.is_retryable());
        let suspended = UpstreamStatus::from_parts(
            StatusCode::FORBIDDEN,
            &h,
            Bytes::from_static(
                br#"{"message":"Your account temporarily is suspended","reason":"TEMPORARILY_SUSPENDED"}"#,
            ),
        );
        assert!(!suspended.is_invalid_token());
        let quota = UpstreamStatus::from_parts(
            StatusCode::TOO_MANY_REQUESTS,
            &h,
            Bytes::from_static(br#"{"message":"quota","reason":"MONTHLY_REQUEST_COUNT"}"#),
        );
        assert!(!quota.is_retryable());
        assert!(quota.is_quota_exhausted());
        for (status, body) in [
            (402, r#"{"message":"Payment required"}"#),
            (
                400,
                r#"{"__type":"com.amazon.aws#ServiceQuotaExceededException","message":"quota"}"#,
            ),
        ] {
            let q = UpstreamStatus::from_parts(
                StatusCode::from_u16(status).unwrap(),
                &h,
                Bytes::from(body),
            );
            assert!(q.is_quota_exhausted() && !q.is_retryable(), "{status}");
        }
        let mut h = HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        h.insert(
            "x-amzn-errortype",
            "ThrottlingException:http://internal.amazon.com/"
                .parse()
                .unwrap(),
        );
        let throttled = UpstreamStatus::from_parts(
            StatusCode::TOO_MANY_REQUESTS,
            &h,
            Bytes::from_static(b"busy"),
        );
        assert!(throttled.is_retryable());
        assert_eq!(throttled.retry_after, Some(Duration::from_secs(2)));
        assert_eq!(throttled.error_type.as_deref(), Some("ThrottlingException"));
        assert_eq!(throttled.message, "busy");
    }

    #[test]
    fn reads_every_retry_hint() {
        let hint = |name: &str, v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
            retry_hint(&h)
        };
        assert_eq!(hint("retry-after", "3"), Some(Duration::from_secs(3)));
        assert_eq!(
            hint("retry-after", "1.5"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            hint("retry-after-ms", "250"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            hint("x-ratelimit-reset-after", "2"),
            Some(Duration::from_secs(2))
        );
        assert_eq!(hint("retry-after", "soon"), None);
        // a date in the past: retry now
        assert_eq!(
            hint("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(30);
        let date = at
            .format(&time::format_description::well_known::Rfc2822)
            .unwrap();
        let d = hint("retry-after", &date).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        // a hint in the JSON body
        let s = UpstreamStatus::from_parts(
            StatusCode::TOO_MANY_REQUESTS,
            &HeaderMap::new(),
            Bytes::from_static(br#"{"message":"slow down","retryAfterMilliseconds":1200}"#),
        );
        assert_eq!(s.retry_after, Some(Duration::from_millis(1200)));
    }

    #[test]
    fn one_classifier_says_what_each_failure_means() {
        let status = |code: u16, body: &'static str| {
            Error::Status(Box::new(UpstreamStatus::from_parts(
                StatusCode::from_u16(code).unwrap(),
                &HeaderMap::new(),
                Bytes::from_static(body.as_bytes()),
            )))
        };
        let exception = |kind: &str, retry_after_ms: Option<u64>| {
            Error::Event(EventError::Exception(StreamException {
                kind: kind.into(),
                message: "m".into(),
                reason: None,
                retry_after_ms,
            }))
        };
        let cases = [
            (
                status(429, r#"{"message":"Rate exceeded"}"#),
                Failure::Throttle(None),
                true,
            ),
            (
                status(429, r#"{"message":"q","reason":"MONTHLY_REQUEST_COUNT"}"#),
                Failure::Quota,
                false,
            ),
            (
                status(
                    403,
                    r#"{"message":"The bearer token included in the request is invalid."}"#,
                ),
                Failure::InvalidToken,
                false,
            ),
            (
                status(
                    403,
                    r#"{"message":"suspended","reason":"TEMPORARILY_SUSPENDED"}"#,
                ),
                Failure::Suspended,
                false,
            ),
            (
                status(500, r#"{"message":"boom"}"#),
                Failure::Unavailable,
                true,
            ),
            (status(400, r#"{"message":"bad"}"#), Failure::Client, false),
            (
                exception("ThrottlingException", Some(1500)),
                Failure::Throttle(Some(Duration::from_millis(1500))),
                true,
            ),
            (
                exception("InternalServerException", None),
                Failure::Unavailable,
                true,
            ),
            (
                exception("ServiceUnavailableException", None),
                Failure::Unavailable,
                true,
            ),
            (
                exception("ValidationException", None),
                Failure::Broken,
                false,
            ),
            (
                Error::FirstByteTimeout(Duration::from_secs(1)),
                Failure::Timeout,
                true,
            ),
            (
                Error::Connect {
                    url: "u".into(),
                    detail: "refused".into(),
                },
                Failure::Transient,
                true,
            ),
            (Error::Truncated, Failure::Broken, false),
            (
                Error::Auth(AuthError::Transient {
                    origin: "o".into(),
                    detail: "d".into(),
                }),
                Failure::Transient,
                true,
            ),
            (
                Error::Auth(AuthError::Refused {
                    origin: "o".into(),
                    status: 400,
                    message: "m".into(),
                    hint: "h".into(),
                }),
                Failure::Credentials,
                false,
            ),
            (
                Error::Auth(AuthError::Persist {
                    origin: "o".into(),
                    detail: "d".into(),
                }),
                Failure::Client,
                false,
            ),
            (
                Error::NoAccount {
                    retry_after: Some(Duration::from_secs(3)),
                    rate_limited: true,
                    quota_exhausted: false,
                    detail: "d".into(),
                },
                Failure::NoAccount,
                false,
            ),
        ];
        for (e, failure, retryable) in cases {
            assert_eq!(e.failure(), failure, "{e}");
            assert_eq!(e.is_retryable(), retryable, "{e}");
        }
    }
}
