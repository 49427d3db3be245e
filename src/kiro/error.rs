//! `kiro::Error`: everything that can go wrong between the gateway and the Kiro service.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::events::{EventError, StreamException};
use super::eventstream::DecodeError;
use crate::auth::AuthError;

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
        match self {
            Error::Connect { .. } | Error::FirstByteTimeout(_) => true,
            Error::Status(s) => s.is_retryable(),
            Error::Auth(a) => a.is_transient(),
            _ => false,
        }
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
}
