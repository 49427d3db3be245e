//! Typed Kiro events, decoded from checked event-stream frames.
//!
//! Dispatch is on the frame headers (`:message-type`, `:event-type`), never on the order of JSON
//! members. Each frame's payload is complete before it is parsed, so a multi-byte character that
//! a TCP read split in two arrives whole. Every event is forwarded as it came: two identical
//! consecutive text deltas are two events.
//!
//! ```
//! use kiro_gateway::kiro::eventstream::{encode_frame, event_headers, Decoder};
//! use kiro_gateway::kiro::events::{Event, frame_to_event};
//!
//! let frame = encode_frame(&event_headers("assistantResponseEvent"), br#"{"content":"Hi"}"#);
//! let mut d = Decoder::new();
//! d.push(&frame);
//! let ev = frame_to_event(d.next_frame().unwrap().unwrap()).unwrap();
//! assert_eq!(ev, Event::Text { content: "Hi".into() });
//! ```

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use super::eventstream::Frame;

/// One event of a generateAssistantResponse stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `assistantResponseEvent` (and `codeEvent`): a text delta of the answer.
    Text { content: String },
    /// `toolUseEvent`: a start, an argument fragment or the stop of one tool call.
    ToolUse(ToolUseEvent),
    /// Reasoning text: split out of the answer by the gateway (fake reasoning) or sent by the
    /// service natively (`reasoningContentEvent`); `signature` when the service signed it (it
    /// may come alone, with empty text, after the reasoning it signs).
    Reasoning {
        text: String,
        signature: Option<String>,
    },
    /// `reasoningContentEvent` with `redactedContent`: reasoning the service withholds, as an
    /// opaque blob the client must send back unchanged.
    RedactedReasoning { data: String },
    /// `metadataEvent`: the service's token counts and why the answer stopped.
    Metadata(Metadata),
    /// `meteringEvent`: credits charged for this turn.
    Metering(Metering),
    /// `contextUsageEvent`: percent of the model's input window in use.
    ContextUsage { percentage: f64 },
    /// `messageMetadataEvent`.
    MessageMetadata {
        conversation_id: Option<String>,
        utterance_id: Option<String>,
    },
    /// Anything else: kept (and logged at debug level by the stream), never silently dropped.
    Unknown { event_type: String, payload: Bytes },
}

impl Event {
    /// Events that carry the answer itself (text, a tool call, reasoning): the first of them is
    /// the "first token" that `FIRST_TOKEN_TIMEOUT` waits for.
    pub fn is_content(&self) -> bool {
        matches!(
            self,
            Event::Text { .. }
                | Event::ToolUse(_)
                | Event::Reasoning { .. }
                | Event::RedactedReasoning { .. }
        )
    }

    /// Events that a normal answer ends with (section 4.5 of the protocol notes): their absence at
    /// the end of the body means the answer was truncated.
    pub fn is_end_marker(&self) -> bool {
        matches!(
            self,
            Event::Metering(_) | Event::ContextUsage { .. } | Event::Metadata(_)
        )
    }
}

/// `metadataEvent` (newer runtimes).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metadata {
    pub token_usage: Option<TokenUsage>,
    /// `END_TURN`, `MAX_TOKENS`, `CONTENT_FILTERED`, `MODEL_CONTEXT_WINDOW_EXCEEDED`,
    /// `PAUSE_TURN`, … as the service wrote it.
    pub stop_reason: Option<String>,
    pub stop_details: Option<Value>,
}

/// `metadataEvent.tokenUsage`: the service's own counts. Absent members stay `None`; nothing
/// is filled in.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    #[serde(default)]
    pub uncached_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_write_input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub total_tokens: Option<u64>,
    #[serde(default)]
    pub context_usage_percentage: Option<f64>,
}

/// One `toolUseEvent` payload.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolUseEvent {
    pub tool_use_id: String,
    pub name: String,
    pub input: ToolInput,
    pub stop: bool,
}

/// The `input` member of a `toolUseEvent`.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolInput {
    /// No input (a start or a bare stop event).
    None,
    /// A raw slice of the argument JSON text; it may end anywhere, even inside an escape.
    Fragment(String),
    /// The whole input sent at once as a JSON value (some service versions do this).
    Whole(Value),
}

/// `meteringEvent`.
#[derive(Debug, Clone, PartialEq)]
pub struct Metering {
    pub unit: Option<String>,
    pub unit_plural: Option<String>,
    pub usage: f64,
}

/// An error the service reported inside the event stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct StreamException {
    /// `:exception-type` / `:error-code` / the error member's name, e.g. `ThrottlingException`.
    pub kind: String,
    pub message: String,
    pub reason: Option<String>,
    pub retry_after_ms: Option<u64>,
}

impl StreamException {
    /// The service cut the output for length (`ContentLengthExceededException`).
    pub fn is_content_length_exceeded(&self) -> bool {
        self.kind.contains("ContentLengthExceeded")
    }

    /// The service throttled the request (`ThrottlingException` / `throttlingError`).
    pub fn is_throttling(&self) -> bool {
        self.kind.to_ascii_lowercase().contains("throttl")
    }

    /// The service failed inside (`InternalServerException`): a later attempt may pass.
    pub fn is_internal_error(&self) -> bool {
        self.kind.to_ascii_lowercase().contains("internalserver")
    }

    /// The service is unavailable (`ServiceUnavailableException` / `serviceUnavailableError`).
    pub fn is_unavailable(&self) -> bool {
        self.kind.contains("ServiceUnavailable") || self.kind == "serviceUnavailableError"
    }
}

/// Why a frame could not become an event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    /// An `exception`/`error` frame, an error member sent as an event, or an `invalidStateEvent`.
    #[error("upstream error in stream: {0}")]
    Exception(StreamException),
    /// A known event whose payload is not the JSON it should be.
    #[error("malformed {event_type} payload: {detail}")]
    BadPayload { event_type: String, detail: String },
    /// A frame with an unexpected `:message-type`.
    #[error("unexpected event-stream message type {0:?}")]
    UnknownMessageType(String),
}

#[derive(Deserialize)]
struct TextPayload {
    #[serde(default)]
    content: Option<String>,
    #[serde(default, rename = "followupPrompt")]
    followup_prompt: Option<Value>,
}

#[derive(Deserialize)]
struct ToolPayload {
    #[serde(rename = "toolUseId")]
    tool_use_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    stop: Option<bool>,
}

#[derive(Deserialize)]
struct MeteringPayload {
    #[serde(default)]
    unit: Option<String>,
    #[serde(default, rename = "unitPlural")]
    unit_plural: Option<String>,
    #[serde(default)]
    usage: f64,
}

#[derive(Deserialize)]
struct ContextPayload {
    #[serde(rename = "contextUsagePercentage")]
    context_usage_percentage: f64,
}

#[derive(Deserialize)]
struct MetadataPayload {
    #[serde(default, rename = "conversationId")]
    conversation_id: Option<String>,
    #[serde(default, rename = "utteranceId")]
    utterance_id: Option<String>,
}

#[derive(Deserialize)]
struct ReasoningPayload {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default, rename = "redactedContent")]
    redacted_content: Option<String>,
}

#[derive(Deserialize)]
struct MetadataEventPayload {
    #[serde(default, rename = "tokenUsage")]
    token_usage: Option<TokenUsage>,
    #[serde(default, rename = "stopReason")]
    stop_reason: Option<String>,
    #[serde(default, rename = "stopDetails")]
    stop_details: Option<Value>,
}

#[derive(Deserialize, Default)]
struct ErrorPayload {
    #[serde(default, alias = "Message")]
    message: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default, rename = "retryAfterMilliseconds")]
    retry_after_ms: Option<u64>,
}

/// Error members of the stream union that non-conforming servers send as ordinary events.
const ERROR_EVENT_TYPES: &[&str] = &[
    "error",
    "throttlingError",
    "validationError",
    "serviceUnavailableError",
    "internalServerError",
    "accessDeniedError",
];

fn exception(kind: &str, payload: &[u8], fallback_message: Option<&str>) -> EventError {
    let p: ErrorPayload = serde_json::from_slice(payload).unwrap_or_default();
    let message = p
        .message
        .or_else(|| fallback_message.map(str::to_owned))
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(payload);
            if text.trim().is_empty() {
                "(no message)".to_owned()
            } else {
                text.into_owned()
            }
        });
    EventError::Exception(StreamException {
        kind: kind.to_owned(),
        message,
        reason: p.reason,
        retry_after_ms: p.retry_after_ms,
    })
}

/// Parse a payload that may be wrapped in its event name (`{"toolUseEvent":{...}}`).
///
/// The payload is deserialised straight into `T` (no intermediate `Value`); only a payload
/// that starts with its own event name as the first key is unwrapped first.
fn parse<T: for<'de> Deserialize<'de>>(event_type: &str, payload: &[u8]) -> Result<T, EventError> {
    let bad = |e: serde_json::Error| EventError::BadPayload {
        event_type: event_type.to_owned(),
        detail: e.to_string(),
    };
    if is_wrapped(event_type, payload) {
        let mut map: std::collections::HashMap<String, T> =
            serde_json::from_slice(payload).map_err(bad)?;
        return map
            .remove(event_type)
            .ok_or_else(|| EventError::BadPayload {
                event_type: event_type.to_owned(),
                detail: "wrapped payload without its event member".into(),
            });
    }
    serde_json::from_slice(payload).map_err(bad)
}

fn is_wrapped(event_type: &str, payload: &[u8]) -> bool {
    let p = payload.trim_ascii_start();
    let Some(rest) = p.strip_prefix(b"{") else {
        return false;
    };
    let rest = rest.trim_ascii_start();
    rest.len() > event_type.len() + 2
        && rest[0] == b'"'
        && &rest[1..=event_type.len()] == event_type.as_bytes()
        && rest[event_type.len() + 1] == b'"'
}

/// Turn one frame into an event, or into the error it carries.
///
/// An `assistantResponseEvent` that only carries a follow-up prompt (the service's suggestion
/// chips, not part of the answer) comes back as [`Event::Unknown`].
pub fn frame_to_event(frame: Frame) -> Result<Event, EventError> {
    let message_type = frame.header_str(":message-type").unwrap_or("event");
    match message_type {
        "event" => {}
        "exception" => {
            let kind = frame.header_str(":exception-type").unwrap_or("exception");
            return Err(exception(kind, &frame.payload, None));
        }
        "error" => {
            let kind = frame.header_str(":error-code").unwrap_or("error");
            let msg = frame.header_str(":error-message");
            return Err(exception(kind, &frame.payload, msg));
        }
        other => return Err(EventError::UnknownMessageType(other.to_owned())),
    }
    let event_type = frame.header_str(":event-type").unwrap_or("");
    let payload = &frame.payload[..];
    let event = match event_type {
        "assistantResponseEvent" | "codeEvent" => {
            let p: TextPayload = parse(event_type, payload)?;
            if p.followup_prompt.as_ref().is_some_and(|v| !v.is_null()) && p.content.is_none() {
                return Ok(Event::Unknown {
                    event_type: event_type.to_owned(),
                    payload: frame.payload,
                });
            }
            Event::Text {
                content: p.content.unwrap_or_default(),
            }
        }
        "toolUseEvent" => {
            let p: ToolPayload = parse(event_type, payload)?;
            let input = match p.input {
                None | Some(Value::Null) => ToolInput::None,
                Some(Value::String(s)) if s.is_empty() => ToolInput::None,
                Some(Value::String(s)) => ToolInput::Fragment(s),
                Some(Value::Object(m)) if m.is_empty() && p.stop != Some(true) => ToolInput::None,
                Some(v) => ToolInput::Whole(v),
            };
            Event::ToolUse(ToolUseEvent {
                tool_use_id: p.tool_use_id,
                name: p.name,
                input,
                stop: p.stop.unwrap_or(false),
            })
        }
        "meteringEvent" => {
            let p: MeteringPayload = parse(event_type, payload)?;
            Event::Metering(Metering {
                unit: p.unit,
                unit_plural: p.unit_plural,
                usage: p.usage,
            })
        }
        "contextUsageEvent" => {
            let p: ContextPayload = parse(event_type, payload)?;
            Event::ContextUsage {
                percentage: p.context_usage_percentage,
            }
        }
        "messageMetadataEvent" => {
            let p: MetadataPayload = parse(event_type, payload)?;
            Event::MessageMetadata {
                conversation_id: p.conversation_id,
                utterance_id: p.utterance_id,
            }
        }
        "reasoningContentEvent" => {
            let p: ReasoningPayload = parse(event_type, payload)?;
            match p.redacted_content {
                Some(data) if !data.is_empty() => Event::RedactedReasoning { data },
                _ => Event::Reasoning {
                    text: p.text.unwrap_or_default(),
                    signature: p.signature.filter(|s| !s.is_empty()),
                },
            }
        }
        "metadataEvent" => {
            let p: MetadataEventPayload = parse(event_type, payload)?;
            Event::Metadata(Metadata {
                token_usage: p.token_usage,
                stop_reason: p.stop_reason.filter(|s| !s.is_empty()),
                stop_details: p.stop_details.filter(|v| !v.is_null()),
            })
        }
        "invalidStateEvent" => return Err(exception(event_type, payload, None)),
        t if ERROR_EVENT_TYPES.contains(&t) => return Err(exception(t, payload, None)),
        _ => Event::Unknown {
            event_type: event_type.to_owned(),
            payload: frame.payload,
        },
    };
    Ok(event)
}

/// Reassembles the argument JSON of streamed tool calls, keyed by `toolUseId`.
///
/// Fragments are concatenated as raw text (never unescaped one by one); the result is checked to
/// be JSON only when the call stops.
#[derive(Debug, Default)]
pub struct ToolCallAssembler {
    calls: Vec<AssembledToolCall>,
}

/// A tool call put back together from its events.
#[derive(Debug, Clone, PartialEq)]
pub struct AssembledToolCall {
    pub tool_use_id: String,
    pub name: String,
    /// The concatenated argument text, exactly as the service sent it.
    pub arguments: String,
    pub stopped: bool,
}

impl AssembledToolCall {
    /// The arguments parsed as JSON (an empty argument text is the empty object).
    pub fn parsed_arguments(&self) -> Result<Value, serde_json::Error> {
        if self.arguments.trim().is_empty() {
            Ok(Value::Object(Default::default()))
        } else {
            serde_json::from_str(&self.arguments)
        }
    }
}

impl ToolCallAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed one event; returns the index of the call it belongs to.
    pub fn push(&mut self, ev: &ToolUseEvent) -> usize {
        let idx = match self
            .calls
            .iter()
            .rposition(|c| c.tool_use_id == ev.tool_use_id)
        {
            Some(i) => i,
            None => {
                self.calls.push(AssembledToolCall {
                    tool_use_id: ev.tool_use_id.clone(),
                    name: ev.name.clone(),
                    arguments: String::new(),
                    stopped: false,
                });
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[idx];
        if call.name.is_empty() && !ev.name.is_empty() {
            call.name = ev.name.clone();
        }
        match &ev.input {
            ToolInput::None => {}
            ToolInput::Fragment(s) => call.arguments.push_str(s),
            ToolInput::Whole(v) => call.arguments = v.to_string(),
        }
        if ev.stop {
            call.stopped = true;
        }
        idx
    }

    pub fn calls(&self) -> &[AssembledToolCall] {
        &self.calls
    }

    pub fn into_calls(self) -> Vec<AssembledToolCall> {
        self.calls
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kiro::eventstream::{encode_frame, event_headers, Decoder, Header, HeaderValue};

    fn ev(event_type: &str, payload: &str) -> Result<Event, EventError> {
        let f = encode_frame(&event_headers(event_type), payload.as_bytes());
        let mut d = Decoder::new();
        d.push(&f);
        frame_to_event(d.next_frame().unwrap().unwrap())
    }

    #[test]
    fn decodes_the_known_events() {
        assert_eq!(
            ev("assistantResponseEvent", r#"{"content":"a\u00e9"}"#).unwrap(),
            Event::Text {
                content: "aé".into()
            }
        );
        assert_eq!(
            ev(
                "meteringEvent",
                r#"{"unit":"credit","unitPlural":"credits","usage":0.0148}"#
            )
            .unwrap(),
            Event::Metering(Metering {
                unit: Some("credit".into()),
                unit_plural: Some("credits".into()),
                usage: 0.0148
            })
        );
        assert_eq!(
            ev("contextUsageEvent", r#"{"contextUsagePercentage":12.5}"#).unwrap(),
            Event::ContextUsage { percentage: 12.5 }
        );
        assert_eq!(
            ev(
                "messageMetadataEvent",
                r#"{"conversationId":"c","utteranceId":"u"}"#
            )
            .unwrap(),
            Event::MessageMetadata {
                conversation_id: Some("c".into()),
                utterance_id: Some("u".into())
            }
        );
    }

    #[test]
    fn accepts_payloads_wrapped_in_their_event_name() {
        let e = ev(
            "toolUseEvent",
            r#"{"toolUseEvent":{"name":"f","toolUseId":"t1","input":"{\"a\""}}"#,
        )
        .unwrap();
        assert_eq!(
            e,
            Event::ToolUse(ToolUseEvent {
                tool_use_id: "t1".into(),
                name: "f".into(),
                input: ToolInput::Fragment("{\"a\"".into()),
                stop: false
            })
        );
    }

    #[test]
    fn unknown_events_are_kept() {
        let e = ev(
            "supplementaryWebLinksEvent",
            r#"{"supplementaryWebLinks":[]}"#,
        )
        .unwrap();
        assert!(
            matches!(e, Event::Unknown { event_type, .. } if event_type == "supplementaryWebLinksEvent")
        );
    }

    #[test]
    fn exception_frames_become_typed_errors() {
        let f = encode_frame(
            &[
                Header::new(":message-type", HeaderValue::String("exception".into())),
                Header::new(
                    ":exception-type",
                    HeaderValue::String("ThrottlingException".into()),
                ),
            ],
            br#"{"message":"slow down","retryAfterMilliseconds":1500}"#,
        );
        let mut d = Decoder::new();
        d.push(&f);
        let err = frame_to_event(d.next_frame().unwrap().unwrap()).unwrap_err();
        assert_eq!(
            err,
            EventError::Exception(StreamException {
                kind: "ThrottlingException".into(),
                message: "slow down".into(),
                reason: None,
                retry_after_ms: Some(1500)
            })
        );
    }

    #[test]
    fn error_frames_and_error_members_become_typed_errors() {
        let f = encode_frame(
            &[
                Header::new(":message-type", HeaderValue::String("error".into())),
                Header::new(":error-code", HeaderValue::String("InternalFailure".into())),
                Header::new(":error-message", HeaderValue::String("boom".into())),
            ],
            b"",
        );
        let mut d = Decoder::new();
        d.push(&f);
        let err = frame_to_event(d.next_frame().unwrap().unwrap()).unwrap_err();
        assert!(
            matches!(err, EventError::Exception(e) if e.kind == "InternalFailure" && e.message == "boom")
        );
        let err = ev("throttlingError", r#"{"message":"too many"}"#).unwrap_err();
        assert!(matches!(err, EventError::Exception(e) if e.kind == "throttlingError"));
        let err = ev(
            "invalidStateEvent",
            r#"{"reason":"X","message":"bad state"}"#,
        )
        .unwrap_err();
        assert!(
            matches!(err, EventError::Exception(e) if e.message == "bad state" && e.reason.as_deref() == Some("X"))
        );
    }

    #[test]
    fn reassembles_fragments_cut_inside_escapes_to_exact_json() {
        let args = r#"{"path":"C:\\dir\\file \"x\".txt","emoji":"\ud83d\ude00","n":[1,2]}"#;
        let mut asm = ToolCallAssembler::new();
        asm.push(&ToolUseEvent {
            tool_use_id: "t".into(),
            name: "write".into(),
            input: ToolInput::None,
            stop: false,
        });
        // cut after every backslash and inside the surrogate escapes
        let mut start = 0;
        let bytes = args.as_bytes();
        for i in 1..bytes.len() {
            if bytes[i - 1] == b'\\' || i % 5 == 0 {
                asm.push(&ToolUseEvent {
                    tool_use_id: "t".into(),
                    name: "write".into(),
                    input: ToolInput::Fragment(args[start..i].into()),
                    stop: false,
                });
                start = i;
            }
        }
        asm.push(&ToolUseEvent {
            tool_use_id: "t".into(),
            name: "write".into(),
            input: ToolInput::Fragment(args[start..].into()),
            stop: false,
        });
        asm.push(&ToolUseEvent {
            tool_use_id: "t".into(),
            name: "write".into(),
            input: ToolInput::None,
            stop: true,
        });
        let calls = asm.into_calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].arguments, args);
        assert!(calls[0].stopped);
        let v = calls[0].parsed_arguments().unwrap();
        assert_eq!(v["path"], "C:\\dir\\file \"x\".txt");
        assert_eq!(v["emoji"], "😀");
    }

    #[test]
    fn two_identical_calls_with_distinct_ids_stay_two() {
        let mut asm = ToolCallAssembler::new();
        for id in ["a", "b"] {
            asm.push(&ToolUseEvent {
                tool_use_id: id.into(),
                name: "f".into(),
                input: ToolInput::Fragment("{}".into()),
                stop: true,
            });
        }
        assert_eq!(asm.calls().len(), 2);
    }
}
