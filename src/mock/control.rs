//! The mock's control API, for tests written in other languages (the Python client tests) that
//! run the mock as a separate process (`cargo run --example mock_kiro`).
//!
//! - `POST /__mock/replies` queues one reply (JSON below) for the next generate request;
//! - `GET /__mock/requests` lists what was received (`[{method, path, body}]`);
//! - `GET /__mock/rejections` lists the rules broken by the requests refused as the service
//!   would (spec 3.2), since the mock started (a reset keeps them);
//! - `POST /__mock/reset` clears the queue and the recorded requests.
//!
//! A reply is either an HTTP error, `{"status": 429, "body": "{...}"}`, or a stream:
//!
//! ```json
//! {"events": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"},
//!             {"type": "tool_call", "id": "tooluse_1", "name": "get_weather",
//!              "arguments": "{\"city\":\"Paris\"}"}],
//!  "end": true,
//!  "faults": [{"type": "reset_at", "frame": 3}]}
//! ```
//!
//! `end` (default true) appends the closing metering and context-usage events. Event types:
//! `text`, `tool_call`, `metering` (`credits`), `context_usage` (`percent`), `raw`
//! (`event_type`, `payload`), `exception` (`kind`, `message`). Fault types: `reset_at`,
//! `bad_crc_at`, `exception_at` (`frame`, `kind`, `message`), `truncate`, `stall_at`
//! (`frame`, `ms`); `header_delay_ms` delays the response headers.

use std::time::Duration;

use serde::Deserialize;

use super::script::{Fault, MockEvent, Script};
use super::Reply;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum EventSpec {
    Text {
        text: String,
    },
    ToolCall {
        id: String,
        name: String,
        arguments: String,
        #[serde(default = "default_fragment")]
        fragment: usize,
    },
    Metering {
        credits: f64,
    },
    ContextUsage {
        percent: f64,
    },
    Raw {
        event_type: String,
        payload: String,
    },
    Exception {
        kind: String,
        message: String,
    },
}

fn default_fragment() -> usize {
    7
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum FaultSpec {
    ResetAt {
        frame: usize,
    },
    BadCrcAt {
        frame: usize,
    },
    ExceptionAt {
        frame: usize,
        kind: String,
        message: String,
    },
    Truncate,
    StallAt {
        frame: usize,
        ms: u64,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ReplySpec {
    Status {
        status: u16,
        #[serde(default)]
        body: String,
    },
    Stream {
        events: Vec<EventSpec>,
        #[serde(default = "default_true")]
        end: bool,
        #[serde(default)]
        faults: Vec<FaultSpec>,
        #[serde(default)]
        header_delay_ms: Option<u64>,
    },
}

/// Parse one reply in the JSON form of the module docs.
pub fn parse_reply(body: &[u8]) -> Result<Reply, String> {
    let spec: ReplySpec = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(match spec {
        ReplySpec::Status { status, body } => Reply::Status { status, body },
        ReplySpec::Stream {
            events,
            end,
            faults,
            header_delay_ms,
        } => {
            let mut s = Script::new().metadata();
            for e in events {
                s = s.event(match e {
                    EventSpec::Text { text } => MockEvent::Text(text),
                    EventSpec::ToolCall {
                        id,
                        name,
                        arguments,
                        fragment,
                    } => MockEvent::ToolCall {
                        id,
                        name,
                        arguments,
                        fragment,
                    },
                    EventSpec::Metering { credits } => MockEvent::Metering(credits),
                    EventSpec::ContextUsage { percent } => MockEvent::ContextUsage(percent),
                    EventSpec::Raw {
                        event_type,
                        payload,
                    } => MockEvent::Raw {
                        event_type,
                        payload,
                    },
                    EventSpec::Exception { kind, message } => {
                        MockEvent::Exception { kind, message }
                    }
                });
            }
            if end {
                s = s.end();
            }
            for f in faults {
                s = s.fault(match f {
                    FaultSpec::ResetAt { frame } => Fault::ResetAt(frame),
                    FaultSpec::BadCrcAt { frame } => Fault::BadCrcAt(frame),
                    FaultSpec::ExceptionAt {
                        frame,
                        kind,
                        message,
                    } => Fault::ExceptionAt {
                        frame,
                        kind,
                        message,
                    },
                    FaultSpec::Truncate => Fault::TruncateBeforeEnd,
                    FaultSpec::StallAt { frame, ms } => Fault::StallAt {
                        frame,
                        pause: Duration::from_millis(ms),
                    },
                });
            }
            if let Some(ms) = header_delay_ms {
                s = s.header_delay(Duration::from_millis(ms));
            }
            Reply::Stream(s)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_reply_forms() {
        let r = parse_reply(br#"{"status": 429, "body": "{}"}"#).unwrap();
        assert_eq!(
            r,
            Reply::Status {
                status: 429,
                body: "{}".into()
            }
        );
        let r = parse_reply(
            br#"{"events": [{"type": "text", "text": "hi"},
                {"type": "tool_call", "id": "t", "name": "f", "arguments": "{}"}],
                "faults": [{"type": "truncate"}]}"#,
        )
        .unwrap();
        let Reply::Stream(s) = r else { panic!() };
        assert_eq!(s.full_text(), "hi");
        assert_eq!(s.faults, vec![Fault::TruncateBeforeEnd]);
        assert!(s
            .events
            .contains(&MockEvent::Metering(super::super::script::DEFAULT_CREDITS)));
        assert!(parse_reply(b"{\"nope\":1}").is_err());
    }
}
