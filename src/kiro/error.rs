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
        let header_ms = |name: &str, scale: u64| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|n| Duration::from_millis(n.saturating_mul(scale)))
        };
        let retry_after = header_ms("retry-after-ms", 1)
            .or_else(|| header_ms("retry-after", 1000))
            .or(parsed.retry_after_ms.map(Duration::from_millis));
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

    /// 429 (except a monthly quota) and 5xx.
    pub fn is_retryable(&self) -> bool {
        let quota = self
            .reason
            .as_deref()
            .is_some_and(|r| r == "MONTHLY_REQUEST_COUNT");
        (self.status == StatusCode::TOO_MANY_REQUESTS && !quota) || self.status.is_server_error()
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
}
