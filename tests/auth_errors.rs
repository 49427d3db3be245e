//! 403 and quota classification, end to end in both dialects (streamed and not): what the
//! client gets (status, error type/code, `Retry-After`), how many upstream calls were made and
//! how many refreshes happened.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use common::{start_with, Running};
use http::StatusCode;
use kiro_gateway::config::Config;
use kiro_gateway::mock::{MockConfig, Reply, Script};
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dialect {
    OpenAi,
    Anthropic,
}

const ALL: [(Dialect, bool); 4] = [
    (Dialect::OpenAi, false),
    (Dialect::OpenAi, true),
    (Dialect::Anthropic, false),
    (Dialect::Anthropic, true),
];

const BAD_TOKEN: &str =
    r#"{"message":"The bearer token included in the request is invalid.","reason":null}"#;

async fn gateway() -> Running {
    start_with(MockConfig::default(), |c: &mut Config| {
        c.fake_reasoning = false;
        c.retry_base_delay_ms = 5;
        c.retry_max_delay_ms = 20;
        c.retry_after_max_secs = 1.0;
    })
    .await
}

struct Got {
    status: StatusCode,
    retry_after: Option<String>,
    should_retry: Option<String>,
    json: Value,
    raw: String,
}

impl Got {
    /// (error type, OpenAI code) of the error body.
    fn error(&self, d: Dialect) -> (String, Option<String>) {
        let e = match d {
            Dialect::OpenAi => &self.json["error"],
            Dialect::Anthropic => {
                assert_eq!(self.json["type"], "error", "{}", self.raw);
                &self.json["error"]
            }
        };
        (
            e["type"].as_str().unwrap_or_default().to_owned(),
            e["code"].as_str().map(str::to_owned),
        )
    }

    fn message(&self) -> String {
        self.json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

async fn call(r: &Running, d: Dialect, stream: bool) -> Got {
    let (path, body) = match d {
        Dialect::OpenAi => (
            "/v1/chat/completions",
            json!({"model": "claude-sonnet-4-5", "stream": stream,
                   "messages": [{"role": "user", "content": "hi"}]}),
        ),
        Dialect::Anthropic => (
            "/v1/messages",
            json!({"model": "claude-sonnet-4-5", "stream": stream, "max_tokens": 100,
                   "messages": [{"role": "user", "content": "hi"}]}),
        ),
    };
    let (status, headers, bytes) = r.send(r.req("POST", path, body.to_string())).await;
    Got {
        status,
        retry_after: headers
            .get(http::header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned()),
        should_retry: headers
            .get("x-should-retry")
            .map(|v| v.to_str().unwrap().to_owned()),
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        raw: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Upstream generate calls and refreshes caused by one client request.
async fn counted(r: &Running, d: Dialect, stream: bool) -> (Got, u64, u64) {
    let (calls, refreshes) = (r.mock.generate_calls(), r.mock.desktop_refreshes());
    let got = call(r, d, stream).await;
    (
        got,
        r.mock.generate_calls() - calls,
        r.mock.desktop_refreshes() - refreshes,
    )
}

#[tokio::test]
async fn suspended_accounts_are_a_403_permission_error_without_refresh() {
    let suspended = [
        Reply::Status {
            status: 403,
            body: r#"{"message":"Your User ID temporarily is suspended.","reason":"TEMPORARILY_SUSPENDED"}"#.into(),
        },
        Reply::StatusWithHeaders {
            status: 403,
            headers: vec![(
                "x-amzn-ErrorType".into(),
                "AccountSuspendedException:http://internal.amazon.com/coral/".into(),
            )],
            body: r#"{"message":"Your User ID temporarily is suspended."}"#.into(),
        },
        Reply::Status {
            status: 403,
            body: r#"{"__type":"com.amazon.coral#AccountSuspendedException","message":"We have locked your account."}"#.into(),
        },
    ];
    for reply in suspended {
        for (d, stream) in ALL {
            let r = gateway().await;
            r.mock.push_reply(reply.clone());
            let (got, calls, refreshes) = counted(&r, d, stream).await;
            assert_eq!(got.status, 403, "{reply:?} {d:?} {stream}: {}", got.raw);
            assert_eq!(got.error(d).0, "permission_error", "{}", got.raw);
            assert!(
                got.message().contains("suspended") || got.message().contains("locked"),
                "the service's message: {}",
                got.raw
            );
            assert_eq!(got.retry_after, None);
            assert_eq!((calls, refreshes), (1, 0), "{reply:?} {d:?} {stream}");
        }
    }
}

#[tokio::test]
async fn an_invalid_bearer_refreshes_once_and_succeeds() {
    for (d, stream) in ALL {
        let r = gateway().await;
        r.mock.fail_next(1, 403, BAD_TOKEN);
        r.mock.push_reply(Reply::Stream(Script::text("ok", 2)));
        let (got, calls, refreshes) = counted(&r, d, stream).await;
        assert_eq!(got.status, 200, "{d:?} {stream}: {}", got.raw);
        assert_eq!((calls, refreshes), (2, 1), "{d:?} {stream}");
    }
}

#[tokio::test]
async fn an_invalid_bearer_refreshes_at_most_once_per_request() {
    for (d, stream) in ALL {
        // 403 (refresh, retry) -> 503 (backoff, retry) -> 403 again: no second refresh
        let r = gateway().await;
        r.mock.fail_next(1, 403, BAD_TOKEN);
        r.mock.push_reply(Reply::server_error(503));
        r.mock.fail_next(1, 403, BAD_TOKEN);
        let (got, calls, refreshes) = counted(&r, d, stream).await;
        assert_eq!(got.status, 403, "{d:?} {stream}: {}", got.raw);
        assert_eq!(got.error(d).0, "permission_error");
        assert_eq!((calls, refreshes), (3, 1), "{d:?} {stream}");
        // and two 403s in a row: one refresh, one retry, then the 403 goes to the client
        let r = gateway().await;
        r.mock.fail_next(2, 403, BAD_TOKEN);
        let (got, calls, refreshes) = counted(&r, d, stream).await;
        assert_eq!(got.status, 403, "{d:?} {stream}: {}", got.raw);
        assert_eq!((calls, refreshes), (2, 1), "{d:?} {stream}");
    }
}

#[tokio::test]
async fn a_used_up_monthly_quota_is_a_429_insufficient_quota_never_retried() {
    let quota = [
        Reply::Status {
            status: 402,
            body: r#"{"message":"You have reached the limit.","reason":"MONTHLY_REQUEST_COUNT"}"#
                .into(),
        },
        Reply::Status {
            status: 400,
            body: r#"{"__type":"ServiceQuotaExceededException","message":"You have reached the limit.","reason":"MONTHLY_REQUEST_COUNT"}"#.into(),
        },
        Reply::StatusWithHeaders {
            status: 400,
            headers: vec![(
                "x-amzn-ErrorType".into(),
                "ServiceQuotaExceededException".into(),
            )],
            body: r#"{"message":"You have reached the limit."}"#.into(),
        },
        // a 429 that says "quota" is not a throttle either
        Reply::Status {
            status: 429,
            body: r#"{"message":"You have reached the limit.","reason":"MONTHLY_REQUEST_COUNT"}"#
                .into(),
        },
    ];
    for reply in quota {
        for (d, stream) in ALL {
            let r = gateway().await;
            for _ in 0..3 {
                r.mock.push_reply(reply.clone());
            }
            let (got, calls, refreshes) = counted(&r, d, stream).await;
            assert_eq!(got.status, 429, "{reply:?} {d:?} {stream}: {}", got.raw);
            let (kind, code) = got.error(d);
            if d == Dialect::OpenAi {
                // OpenAI's own shape for a used-up quota
                assert_eq!(kind, "insufficient_quota", "{}", got.raw);
                assert_eq!(code.as_deref(), Some("insufficient_quota"), "{}", got.raw);
            } else {
                assert_eq!(kind, "rate_limit_error", "{}", got.raw);
            }
            // so the SDKs do not retry it on their own (non-stream: the status carries it)
            assert_eq!(got.should_retry.as_deref(), Some("false"), "{}", got.raw);
            assert!(got.raw.contains("Monthly request limit"), "{}", got.raw);
            assert_eq!(got.retry_after, None, "waiting does not help");
            assert_eq!((calls, refreshes), (1, 0), "{reply:?} {d:?} {stream}");
        }
    }
}

#[tokio::test]
async fn a_short_throttle_hint_is_waited_out_then_retried() {
    for (d, stream) in ALL {
        let r = gateway().await;
        r.mock.push_reply(Reply::Status {
            status: 429,
            body: r#"{"message":"Rate exceeded","reason":"USER_REQUEST_RATE_EXCEEDED","retryAfterMilliseconds":300}"#.into(),
        });
        r.mock
            .push_reply(Reply::Stream(Script::text("after waiting", 4)));
        let t0 = tokio::time::Instant::now();
        let (got, calls, refreshes) = counted(&r, d, stream).await;
        assert_eq!(got.status, 200, "{d:?} {stream}: {}", got.raw);
        assert!(
            t0.elapsed() >= Duration::from_millis(300),
            "the hint was honoured"
        );
        assert_eq!((calls, refreshes), (2, 0));
    }
}

#[tokio::test]
async fn a_throttle_hint_over_the_cap_goes_to_the_client_as_retry_after() {
    for (d, stream) in ALL {
        let r = gateway().await;
        r.mock.push_reply(Reply::StatusWithHeaders {
            status: 429,
            headers: vec![
                ("Retry-After".into(), "30".into()),
                ("x-amzn-ErrorType".into(), "ThrottlingException".into()),
            ],
            body: r#"{"message":"Rate exceeded","reason":"USER_REQUEST_RATE_EXCEEDED"}"#.into(),
        });
        let t0 = tokio::time::Instant::now();
        let (got, calls, refreshes) = counted(&r, d, stream).await;
        assert_eq!(got.status, 429, "{d:?} {stream}: {}", got.raw);
        assert_eq!(got.error(d).0, "rate_limit_error", "{}", got.raw);
        assert_eq!(got.retry_after.as_deref(), Some("30"));
        assert!(t0.elapsed() < Duration::from_secs(2), "not waited out");
        assert_eq!((calls, refreshes), (1, 0));
    }
}

#[tokio::test]
async fn exhausted_throttle_retries_pass_the_last_hint_on() {
    for (d, stream) in ALL {
        let r = gateway().await;
        r.mock.fail_next(
            3,
            429,
            r#"{"message":"Rate exceeded","reason":"INSUFFICIENT_MODEL_CAPACITY","retryAfterMilliseconds":150}"#,
        );
        let (got, calls, refreshes) = counted(&r, d, stream).await;
        assert_eq!(got.status, 429, "{d:?} {stream}: {}", got.raw);
        assert_eq!(got.error(d).0, "rate_limit_error", "{}", got.raw);
        assert_eq!(got.retry_after.as_deref(), Some("1"), "150 ms rounds up");
        assert!(got.raw.contains("Rate exceeded"), "{}", got.raw);
        assert_eq!((calls, refreshes), (3, 0));
    }
}
