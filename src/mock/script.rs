//! What the mock answers to `generateAssistantResponse`: scripted events, encoded as real
//! event-stream frames, with optional faults.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde_json::json;

use crate::kiro::eventstream::{encode_frame, event_headers, Header, HeaderValue};

/// One scripted upstream event.
#[derive(Debug, Clone, PartialEq)]
pub enum MockEvent {
    /// `messageMetadataEvent`.
    Metadata,
    /// One `assistantResponseEvent` with this content.
    Text(String),
    /// A whole tool call: a start event, the argument JSON text cut into fragments of about
    /// `fragment` bytes (and also right after every backslash, so cuts land inside escapes),
    /// then the stop event.
    ToolCall {
        id: String,
        name: String,
        arguments: String,
        fragment: usize,
    },
    /// `meteringEvent` with this many credits.
    Metering(f64),
    /// `contextUsageEvent` with this percentage.
    ContextUsage(f64),
    /// Any event type with a raw JSON payload.
    Raw { event_type: String, payload: String },
    /// Native reasoning: `reasoningContentEvent` deltas of about `delta` characters, then (when
    /// given) the signature in an event of its own, as newer runtimes send it.
    Reasoning {
        text: String,
        signature: Option<String>,
        delta: usize,
    },
    /// `reasoningContentEvent` with `redactedContent`.
    RedactedReasoning(String),
    /// `metadataEvent` with this `tokenUsage` object (and `stopReason`, when given).
    TokenUsage {
        usage: serde_json::Value,
        stop_reason: Option<String>,
    },
    /// An `invalidStateEvent` (an error inside a 200 stream).
    InvalidState { reason: String, message: String },
    /// `event` with its payload wrapped in its event name: `{"<type>": {…}}`.
    Wrapped(Box<MockEvent>),
    /// An `exception` frame.
    Exception { kind: String, message: String },
}

/// A fault injected into a streamed answer. Frame numbers count encoded frames from 0.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Send the frames before `frame`, then half of it, then break the connection.
    ResetAt(usize),
    /// Corrupt one payload byte of `frame` (its message CRC no longer matches).
    BadCrcAt(usize),
    /// Replace the stream from `frame` on with an exception frame, then end the body.
    ExceptionAt {
        frame: usize,
        kind: String,
        message: String,
    },
    /// Leave out the closing metering and context-usage events.
    TruncateBeforeEnd,
    /// Pause this long before sending `frame`.
    StallAt { frame: usize, pause: Duration },
}

/// A streamed answer: events, faults, and how the bytes are cut into writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub events: Vec<MockEvent>,
    pub faults: Vec<Fault>,
    /// Delay before the response headers go out.
    pub header_delay: Option<Duration>,
    /// Largest write; each write is a random size from 1 to this.
    pub max_write: usize,
    /// Seed of the cut positions (fixed by default, so failures reproduce).
    pub seed: u64,
    /// Pause between writes (0: just yield to the runtime).
    pub write_pause: Duration,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            events: Vec::new(),
            faults: Vec::new(),
            header_delay: None,
            max_write: 48,
            seed: 0x5eed,
            write_pause: Duration::ZERO,
        }
    }
}

/// The credits and context figure a scripted answer ends with.
pub const DEFAULT_CREDITS: f64 = 0.0148;
pub const DEFAULT_CONTEXT_PERCENT: f64 = 1.25;

impl Script {
    pub fn new() -> Self {
        Self::default()
    }

    /// An answer streaming `text` in deltas of about `delta` characters, then the closing
    /// events.
    pub fn text(text: &str, delta: usize) -> Self {
        Script::new().metadata().text_deltas(text, delta).end()
    }

    pub fn metadata(mut self) -> Self {
        self.events.push(MockEvent::Metadata);
        self
    }

    /// `text` cut into deltas of about `delta` characters (on character boundaries).
    pub fn text_deltas(mut self, text: &str, delta: usize) -> Self {
        for piece in split_chars(text, delta.max(1)) {
            self.events.push(MockEvent::Text(piece));
        }
        self
    }

    pub fn event(mut self, ev: MockEvent) -> Self {
        self.events.push(ev);
        self
    }

    pub fn tool_call(mut self, id: &str, name: &str, arguments: &str) -> Self {
        self.events.push(MockEvent::ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
            fragment: 7,
        });
        self
    }

    /// The closing metering and context-usage events.
    pub fn end(mut self) -> Self {
        self.events.push(MockEvent::Metering(DEFAULT_CREDITS));
        self.events
            .push(MockEvent::ContextUsage(DEFAULT_CONTEXT_PERCENT));
        self
    }

    pub fn fault(mut self, f: Fault) -> Self {
        self.faults.push(f);
        self
    }

    pub fn header_delay(mut self, d: Duration) -> Self {
        self.header_delay = Some(d);
        self
    }

    pub fn max_write(mut self, n: usize) -> Self {
        self.max_write = n.max(1);
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub fn write_pause(mut self, d: Duration) -> Self {
        self.write_pause = d;
        self
    }

    /// The encoded frames, faults applied (except reset and stall, which act while sending).
    pub fn frames(&self) -> Vec<Bytes> {
        let truncate = self.faults.contains(&Fault::TruncateBeforeEnd);
        let mut frames = Vec::new();
        for ev in &self.events {
            if truncate && matches!(ev, MockEvent::Metering(_) | MockEvent::ContextUsage(_)) {
                continue;
            }
            encode_event(ev, &mut frames);
        }
        for f in &self.faults {
            match f {
                Fault::BadCrcAt(n) => {
                    if let Some(frame) = frames.get_mut(*n) {
                        let mut b = BytesMut::from(&frame[..]);
                        let i = b.len().saturating_sub(5);
                        b[i] ^= 0x20;
                        *frame = b.freeze();
                    }
                }
                Fault::ExceptionAt {
                    frame,
                    kind,
                    message,
                } => {
                    frames.truncate(*frame);
                    encode_event(
                        &MockEvent::Exception {
                            kind: kind.clone(),
                            message: message.clone(),
                        },
                        &mut frames,
                    );
                }
                _ => {}
            }
        }
        frames
    }

    /// The text of all `Text` events, concatenated: what a client should end up with.
    pub fn full_text(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| match e {
                MockEvent::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }
}

fn split_chars(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

/// Cut a tool's argument text into fragments: every `n` bytes and right after each backslash,
/// on character boundaries only.
pub fn tool_fragments(args: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in args.chars() {
        cur.push(c);
        if c == '\\' || cur.len() >= n.max(1) {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The same event with its payload as `{"<event-type>": payload}`.
fn wrap_frame(f: &Bytes) -> Bytes {
    let mut d = crate::kiro::eventstream::Decoder::new();
    d.push(f);
    match d.next_frame() {
        Ok(Some(fr)) => {
            let t = fr.header_str(":event-type").unwrap_or("event").to_owned();
            let inner: serde_json::Value =
                serde_json::from_slice(&fr.payload).unwrap_or(serde_json::Value::Null);
            frame(&t, json!({ t.clone(): inner }))
        }
        _ => f.clone(),
    }
}

fn frame(event_type: &str, payload: serde_json::Value) -> Bytes {
    encode_frame(&event_headers(event_type), payload.to_string().as_bytes())
}

fn encode_event(ev: &MockEvent, out: &mut Vec<Bytes>) {
    match ev {
        MockEvent::Metadata => out.push(frame(
            "messageMetadataEvent",
            json!({"conversationId": "mock-conversation", "utteranceId": "mock-utterance"}),
        )),
        MockEvent::Text(t) => out.push(frame("assistantResponseEvent", json!({"content": t}))),
        MockEvent::ToolCall {
            id,
            name,
            arguments,
            fragment,
        } => {
            out.push(frame(
                "toolUseEvent",
                json!({"name": name, "toolUseId": id}),
            ));
            for piece in tool_fragments(arguments, *fragment) {
                out.push(frame(
                    "toolUseEvent",
                    json!({"input": piece, "name": name, "toolUseId": id}),
                ));
            }
            out.push(frame(
                "toolUseEvent",
                json!({"name": name, "stop": true, "toolUseId": id}),
            ));
        }
        MockEvent::Metering(credits) => out.push(frame(
            "meteringEvent",
            json!({"unit": "credit", "unitPlural": "credits", "usage": credits}),
        )),
        MockEvent::ContextUsage(p) => out.push(frame(
            "contextUsageEvent",
            json!({"contextUsagePercentage": p}),
        )),
        MockEvent::Raw {
            event_type,
            payload,
        } => out.push(encode_frame(&event_headers(event_type), payload.as_bytes())),
        MockEvent::Reasoning {
            text,
            signature,
            delta,
        } => {
            for piece in split_chars(text, (*delta).max(1)) {
                out.push(frame("reasoningContentEvent", json!({"text": piece})));
            }
            if let Some(s) = signature {
                out.push(frame(
                    "reasoningContentEvent",
                    json!({"signature": s, "text": ""}),
                ));
            }
        }
        MockEvent::RedactedReasoning(data) => out.push(frame(
            "reasoningContentEvent",
            json!({"redactedContent": data}),
        )),
        MockEvent::TokenUsage { usage, stop_reason } => {
            let mut p = json!({"tokenUsage": usage});
            if let Some(r) = stop_reason {
                p["stopReason"] = json!(r);
            }
            out.push(frame("metadataEvent", p));
        }
        MockEvent::InvalidState { reason, message } => out.push(frame(
            "invalidStateEvent",
            json!({"message": message, "reason": reason}),
        )),
        MockEvent::Wrapped(inner) => {
            let mut frames = Vec::new();
            encode_event(inner, &mut frames);
            for f in frames {
                out.push(wrap_frame(&f));
            }
        }
        MockEvent::Exception { kind, message } => out.push(encode_frame(
            &[
                Header::new(":message-type", HeaderValue::String("exception".into())),
                Header::new(":exception-type", HeaderValue::String(kind.clone().into())),
                Header::new(
                    ":content-type",
                    HeaderValue::String("application/json".into()),
                ),
            ],
            json!({"message": message}).to_string().as_bytes(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_cut_after_backslashes_and_rejoin_exactly() {
        let args = r#"{"a":"x\"y\\z\u00e9"}"#;
        let parts = tool_fragments(args, 4);
        assert!(parts.iter().any(|p| p.ends_with('\\')));
        assert_eq!(parts.concat(), args);
    }

    #[test]
    fn truncation_drops_the_closing_events() {
        let s = Script::text("hi", 1).fault(Fault::TruncateBeforeEnd);
        // metadata + 2 text frames, no metering/context
        assert_eq!(s.frames().len(), 3);
        assert_eq!(Script::text("hi", 1).frames().len(), 5);
    }
}
