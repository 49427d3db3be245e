//! The fault matrix: every upstream failure, in both dialects, streamed and not, with the
//! client-side result asserted. Timeouts are set to fractions of a second so the matrix runs
//! fast.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use common::{start_with, Running};
use http::StatusCode;
use kiro_gateway::config::Config;
use kiro_gateway::mock::{Fault, MockConfig, Reply, Script};
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

fn fast(c: &mut Config) {
    c.first_token_timeout_secs = 0.4;
    c.streaming_read_timeout_secs = 0.4;
    c.retry_base_delay_ms = 5;
    c.retry_max_delay_ms = 20;
}

async fn gateway(tweak: impl FnOnce(&mut Config)) -> Running {
    start_with(MockConfig::default(), |c| {
        fast(c);
        tweak(c);
    })
    .await
}

/// What the client got.
#[derive(Debug)]
struct Outcome {
    status: StatusCode,
    /// non-stream: the JSON body; stream: the list of events (`{"event", "data"}`)
    json: Value,
    events: Vec<Value>,
    raw: String,
}

impl Outcome {
    fn is_error_body(&self, d: Dialect) -> bool {
        match d {
            Dialect::OpenAi => self.json["error"]["message"].is_string(),
            Dialect::Anthropic => {
                self.json["type"] == "error" && self.json["error"]["message"].is_string()
            }
        }
    }

    /// A streamed answer that ended with an error event and nothing that looks like success.
    fn stream_failed_honestly(&self, d: Dialect) -> bool {
        let last = self.events.last().cloned().unwrap_or_default();
        let success_marker = match d {
            Dialect::OpenAi => {
                self.raw.contains("[DONE]") || self.raw.contains("\"finish_reason\":\"")
            }
            Dialect::Anthropic => {
                self.raw.contains("message_stop") || self.raw.contains("\"stop_reason\":\"")
            }
        };
        let error_last = match d {
            Dialect::OpenAi => last["data"]["error"]["message"].is_string(),
            Dialect::Anthropic => {
                last["event"] == "error" && last["data"]["error"]["message"].is_string()
            }
        };
        error_last && !success_marker
    }

    fn text(&self, d: Dialect, stream: bool) -> String {
        match (d, stream) {
            (Dialect::OpenAi, false) => self.json["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .into(),
            (Dialect::Anthropic, false) => self.json["content"]
                .as_array()
                .map(|c| c.iter().filter_map(|b| b["text"].as_str()).collect())
                .unwrap_or_default(),
            (Dialect::OpenAi, true) => self
                .events
                .iter()
                .filter_map(|e| e["data"]["choices"][0]["delta"]["content"].as_str())
                .collect(),
            (Dialect::Anthropic, true) => self
                .events
                .iter()
                .filter_map(|e| e["data"]["delta"]["text"].as_str())
                .collect(),
        }
    }
}

async fn call(r: &Running, d: Dialect, stream: bool) -> Outcome {
    let (path, body) = match d {
        Dialect::OpenAi => (
            "/v1/chat/completions",
            json!({"model": "claude-sonnet-4-5", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        Dialect::Anthropic => (
            "/v1/messages",
            json!({"model": "claude-sonnet-4-5", "stream": stream, "max_tokens": 100,
                   "messages": [{"role": "user", "content": "hi"}]}),
        ),
    };
    let (status, _, bytes) = r.send(r.req("POST", path, body.to_string())).await;
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    let events = raw
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .filter_map(|e| {
            let mut name = Value::Null;
            let mut data = None;
            for l in e.lines() {
                if let Some(n) = l.strip_prefix("event: ") {
                    name = json!(n);
                }
                if let Some(x) = l.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<Value>(x).unwrap_or(json!(x)));
                }
            }
            data.map(|data| json!({"event": name, "data": data}))
        })
        .collect();
    Outcome {
        status,
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        events,
        raw,
    }
}

fn no_thinking(c: &mut Config) {
    c.fake_reasoning = false;
}

#[tokio::test]
async fn stale_token_403_refreshes_once_and_succeeds() {
    for (d, stream) in ALL {
        let r = gateway(no_thinking).await;
        r.mock.revoke_access_tokens();
        r.mock
            .push_reply(Reply::Stream(Script::text("fresh token works", 4)));
        let before = r.mock.desktop_refreshes();
        let o = call(&r, d, stream).await;
        assert_eq!(o.status, 200, "{d:?} {stream}");
        assert_eq!(o.text(d, stream), "fresh token works", "{d:?} {stream}");
        assert_eq!(r.mock.desktop_refreshes(), before + 1, "{d:?} {stream}");
    }
}

#[tokio::test]
async fn revoked_refresh_token_tells_the_user_to_sign_in_again() {
    for (d, stream) in ALL {
        let r = gateway(no_thinking).await;
        r.mock.revoke_access_tokens();
        r.mock.revoke_refresh_token();
        let o = call(&r, d, stream).await;
        // the gateway's credential was refused, not the client's key: 503, never 401
        assert_eq!(o.status, 503, "{d:?} {stream}: {}", o.raw);
        assert!(o.is_error_body(d), "{}", o.raw);
        assert_eq!(o.json["error"]["type"], "api_error", "{}", o.raw);
        assert_eq!(
            o.json["error"]["message"],
            kiro_gateway::kiro::KIRO_CREDENTIALS_REFUSED,
            "{}",
            o.raw
        );
        assert!(o.raw.contains("sign in to Kiro again"), "{}", o.raw);
        assert!(
            !o.raw.contains("mock-refresh-"),
            "no secret in the message: {}",
            o.raw
        );
    }
}

#[tokio::test]
async fn throttling_and_server_errors_back_off_then_succeed() {
    for reply in [
        Reply::throttled(),
        Reply::server_error(500),
        Reply::server_error(502),
        Reply::server_error(503),
    ] {
        for (d, stream) in ALL {
            let r = gateway(no_thinking).await;
            r.mock.push_reply(reply.clone());
            r.mock
                .push_reply(Reply::Stream(Script::text("after a retry", 4)));
            let o = call(&r, d, stream).await;
            assert_eq!(o.status, 200, "{reply:?} {d:?} {stream}");
            assert_eq!(o.text(d, stream), "after a retry");
            assert_eq!(r.mock.generate_calls(), 2);
        }
    }
}

#[tokio::test]
async fn exhausted_retries_carry_the_upstream_status_and_message() {
    for (d, stream) in ALL {
        let r = gateway(no_thinking).await;
        r.mock.fail_next(
            3,
            503,
            r#"{"message":"Service is unavailable, try later","reason":null}"#,
        );
        let o = call(&r, d, stream).await;
        assert_eq!(o.status, 503, "{d:?} {stream}");
        assert!(o.is_error_body(d));
        assert!(o.raw.contains("Service is unavailable, try later"));
        assert_eq!(r.mock.generate_calls(), 3);
    }
}

#[tokio::test]
async fn upstream_400_is_passed_through_unretried() {
    for (d, stream) in ALL {
        let r = gateway(no_thinking).await;
        r.mock.fail_next(
            2,
            400,
            r#"{"message":"Improperly formed request.","reason":null}"#,
        );
        let o = call(&r, d, stream).await;
        assert_eq!(o.status, 400, "{d:?} {stream}");
        assert!(o.is_error_body(d));
        assert_eq!(r.mock.generate_calls(), 1);
    }
}

#[tokio::test]
async fn unreachable_and_tls_failures_are_502_with_a_clear_message() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    for (d, stream) in ALL {
        // connection refused
        let r = gateway(|c| {
            no_thinking(c);
            c.retry_max_attempts = 2;
        })
        .await;
        let mut cfg_url = dead_url.clone();
        let r2 = gateway(|c| {
            no_thinking(c);
            c.retry_max_attempts = 1;
            c.kiro_api_url = std::mem::take(&mut cfg_url);
        })
        .await;
        let o = call(&r2, d, stream).await;
        assert_eq!(o.status, 502, "{d:?} {stream}");
        assert!(
            o.raw.contains("could not reach the Kiro service"),
            "{}",
            o.raw
        );
        // TLS to a plain-HTTP port: the handshake fails
        let tls_url = r.mock.url().replace("http://", "https://");
        let r3 = gateway(move |c| {
            no_thinking(c);
            c.retry_max_attempts = 1;
            c.kiro_api_url = tls_url;
        })
        .await;
        let o = call(&r3, d, stream).await;
        assert_eq!(o.status, 502, "{d:?} {stream}");
        assert!(
            o.raw.contains("could not reach the Kiro service"),
            "{}",
            o.raw
        );
    }
}

#[tokio::test]
async fn slow_first_byte_is_retried_then_504() {
    for (d, stream) in ALL {
        // slow once, then fine: retried and answered
        let r = gateway(no_thinking).await;
        r.mock.push_reply(Reply::Stream(
            Script::text("late", 4).header_delay(Duration::from_millis(900)),
        ));
        r.mock.push_reply(Reply::Stream(Script::text("on time", 4)));
        let o = call(&r, d, stream).await;
        assert_eq!(o.status, 200, "{d:?} {stream}");
        assert_eq!(o.text(d, stream), "on time");
        // always slow: 504 after FIRST_TOKEN_MAX_RETRIES attempts
        let r = gateway(|c| {
            no_thinking(c);
            c.first_token_max_retries = 2;
        })
        .await;
        for _ in 0..2 {
            r.mock.push_reply(Reply::Stream(
                Script::text("late", 4).header_delay(Duration::from_millis(900)),
            ));
        }
        let o = call(&r, d, stream).await;
        assert_eq!(o.status, 504, "{d:?} {stream}: {}", o.raw);
        assert!(o.is_error_body(d));
        assert_eq!(r.mock.generate_calls(), 2);
    }
}

/// `messageMetadataEvent` is bookkeeping, not a first token: a service that sends it and then
/// stalls is retried at `FIRST_TOKEN_TIMEOUT`, not waited on for `STREAMING_READ_TIMEOUT`.
#[tokio::test]
async fn a_stall_right_after_the_metadata_event_is_a_first_token_timeout() {
    for (d, stream) in ALL {
        let r = gateway(|c| {
            no_thinking(c);
            c.streaming_read_timeout_secs = 30.0;
        })
        .await;
        // frame 0 is the metadata event; the text would come 20 s later
        r.mock
            .push_reply(Reply::Stream(Script::text("late", 4).fault(
                Fault::StallAt {
                    frame: 1,
                    pause: Duration::from_secs(20),
                },
            )));
        r.mock.push_reply(Reply::Stream(Script::text("on time", 4)));
        let started = tokio::time::Instant::now();
        let o = call(&r, d, stream).await;
        assert_eq!(o.status, 200, "{d:?} {stream}: {}", o.raw);
        assert_eq!(o.text(d, stream), "on time", "{d:?} {stream}");
        assert_eq!(r.mock.generate_calls(), 2, "{d:?} {stream}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{d:?} {stream}"
        );
    }
}

#[tokio::test]
async fn a_stall_mid_stream_is_an_error_not_an_end() {
    for (d, stream) in ALL {
        let r = gateway(no_thinking).await;
        r.mock
            .push_reply(Reply::Stream(Script::text("one two three", 4).fault(
                Fault::StallAt {
                    frame: 3,
                    pause: Duration::from_secs(3),
                },
            )));
        let o = call(&r, d, stream).await;
        if stream {
            assert_eq!(o.status, 200);
            assert!(o.stream_failed_honestly(d), "{d:?}: {}", o.raw);
            assert!(o.raw.contains("stalled"), "{}", o.raw);
        } else {
            assert_eq!(o.status, 504, "{d:?}: {}", o.raw);
            assert!(o.is_error_body(d));
        }
    }
}

#[tokio::test]
async fn broken_streams_are_errors_and_nothing_corrupt_is_forwarded() {
    let faults = [
        Fault::ResetAt(3),
        Fault::BadCrcAt(3),
        Fault::TruncateBeforeEnd,
        Fault::ExceptionAt {
            frame: 3,
            kind: "InternalServerException".into(),
            message: "boom".into(),
        },
    ];
    for fault in faults {
        for (d, stream) in ALL {
            let r = gateway(no_thinking).await;
            r.mock.push_reply(Reply::Stream(
                Script::text("alpha beta gamma delta", 4).fault(fault.clone()),
            ));
            let o = call(&r, d, stream).await;
            if stream {
                assert_eq!(o.status, 200);
                assert!(o.stream_failed_honestly(d), "{fault:?} {d:?}: {}", o.raw);
                assert!(
                    "alpha beta gamma delta".starts_with(&o.text(d, true)),
                    "{fault:?} {d:?}"
                );
            } else {
                assert_eq!(o.status, 502, "{fault:?} {d:?}: {}", o.raw);
                assert!(o.is_error_body(d), "{fault:?} {d:?}");
            }
        }
    }
}

#[tokio::test]
async fn a_client_that_goes_away_closes_the_upstream_within_100ms() {
    use http_body_util::BodyExt;
    for d in [Dialect::OpenAi, Dialect::Anthropic] {
        let r = gateway(no_thinking).await;
        r.mock.push_reply(Reply::Stream(
            Script::text(&"word ".repeat(4000), 5).write_pause(Duration::from_millis(1)),
        ));
        let (path, body) = match d {
            Dialect::OpenAi => (
                "/v1/chat/completions",
                json!({"model": "claude-sonnet-4-5", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
            ),
            Dialect::Anthropic => (
                "/v1/messages",
                json!({"model": "claude-sonnet-4-5", "stream": true, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
            ),
        };
        let resp = r
            .http
            .request(r.req("POST", path, body.to_string()))
            .await
            .unwrap();
        let mut b = resp.into_body();
        b.frame().await.unwrap().unwrap();
        assert_eq!(r.mock.open_streams(), 1);
        assert_eq!(r.gateway.parts.translate.open_streams.get(), 1, "{d:?}");
        drop(b);
        let took = common::eventually(
            &format!("{d:?}: the mock to see its stream closed"),
            Duration::from_secs(1),
            || r.mock.open_streams() == 0,
        )
        .await;
        assert_eq!(r.mock.open_streams(), 0, "{d:?}");
        assert!(
            took < Duration::from_millis(100),
            "{d:?}: upstream closed after {took:?}"
        );
        // nothing of the request is left in the gateway
        common::eventually(
            &format!("{d:?}: the gateway's open-stream count to reach 0"),
            Duration::from_secs(1),
            || r.gateway.parts.translate.open_streams.get() == 0,
        )
        .await;
        assert_eq!(
            r.gateway.parts.translate.open_streams.get(),
            0,
            "{d:?}: a stream body was leaked"
        );
    }
}

#[tokio::test]
async fn a_failing_refresh_is_shared_by_every_waiting_request() {
    let r = start_with(
        MockConfig {
            refresh_delay: Duration::from_millis(200),
            ..Default::default()
        },
        |c| {
            fast(c);
            no_thinking(c);
        },
    )
    .await;
    r.mock.revoke_access_tokens();
    r.mock.revoke_refresh_token();
    let before = r.mock.desktop_refreshes();
    let calls: Vec<_> = (0..20)
        .map(|i| {
            call(
                &r,
                if i % 2 == 0 {
                    Dialect::OpenAi
                } else {
                    Dialect::Anthropic
                },
                i % 3 == 0,
            )
        })
        .collect();
    let outcomes = futures_util::future::join_all(calls).await;
    for o in &outcomes {
        assert_eq!(o.status, 503, "{}", o.raw);
    }
    assert_eq!(
        r.mock.desktop_refreshes() - before,
        1,
        "one refresh attempt for twenty requests"
    );
}
