//! Kiro events → Anthropic Messages SSE, and → one `message`.
//!
//! Stream order: `message_start` (usage with the prompt estimate), then per block
//! `content_block_start` / `content_block_delta` / `content_block_stop` with indexes contiguous
//! from 0 in emission order, then `message_delta` (`stop_reason`, `usage`), then
//! `message_stop`. Text deltas go out as they arrive; a tool call opens its `tool_use` block on
//! its start event and forwards each argument fragment as an `input_json_delta` at once, held
//! back only by the few bytes of an unfinished escape ([`SafeJsonSplitter`]). `ping` keeps the
//! connection alive while the upstream is silent. A failure sends `event: error` and ends: no
//! `message_delta` stop and no `message_stop` after it.

use bytes::Bytes;
use http::Response;
use serde_json::{json, Value};

use crate::api::jsonsplit::SafeJsonSplitter;
use crate::api::thinking::Signer;
use crate::api::{sse_event, Body, Encoder, End, Folder, ResponseMeta};
use crate::error::GatewayError;
use crate::kiro::{Event, ToolCallAssembler, ToolInput};

fn stop_reason(
    end: End,
    usage: &crate::api::usage::UsageTracker,
    called_tools: bool,
) -> &'static str {
    crate::api::Stop::of(end, usage.stop_reason(), called_tools).anthropic()
}

/// The final `usage` object: `input_tokens` is the uncached input, the cache figures appear
/// only when the service reported them, `kiro` carries the source and the credits.
pub fn usage_json(u: &crate::api::usage::Usage) -> Value {
    let mut v =
        json!({"input_tokens": u.uncached_prompt_tokens(), "output_tokens": u.completion_tokens});
    if let Some(c) = u.cache_read_tokens {
        v["cache_read_input_tokens"] = json!(c);
    }
    if let Some(c) = u.cache_write_tokens {
        v["cache_creation_input_tokens"] = json!(c);
    }
    v["kiro"] = u.kiro_json();
    v
}

enum Open {
    /// `signature`: the service's, when it sent one (native reasoning); else the gateway signs
    Thinking {
        signer: Signer,
        signature: Option<String>,
    },
    Text,
    Tool {
        id: String,
        split: SafeJsonSplitter,
    },
}

/// Streams events (see the module docs).
pub struct MessagesEncoder {
    meta: ResponseMeta,
    started: bool,
    open: Option<Open>,
    /// index of the open block, or of the next block when none is open
    index: usize,
    called_tools: bool,
    /// finds a call the service cut short
    check: crate::api::ToolCallCheck,
}

impl MessagesEncoder {
    pub fn new(meta: ResponseMeta) -> Self {
        MessagesEncoder {
            meta,
            started: false,
            open: None,
            index: 0,
            called_tools: false,
            check: Default::default(),
        }
    }

    fn start(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let u = self.meta.usage.usage();
        out.push(sse_event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": self.meta.id, "type": "message", "role": "assistant", "model": self.meta.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": u.prompt_tokens, "output_tokens": 0}}}),
        ));
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        let Some(open) = self.open.take() else { return };
        match open {
            Open::Tool { mut split, .. } => {
                let rest = split.finish();
                if !rest.is_empty() {
                    self.str_delta("input_json_delta", "partial_json", &rest, out);
                }
            }
            Open::Thinking { signer, signature } => {
                let signature = signature.unwrap_or_else(|| signer.finish());
                self.delta(
                    json!({"type": "signature_delta", "signature": signature}),
                    out,
                );
            }
            Open::Text => {}
        }
        out.push(sse_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": self.index}),
        ));
        self.index += 1;
    }

    fn open(&mut self, block: Value, open: Open, out: &mut Vec<Bytes>) {
        self.close(out);
        out.push(sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.index, "content_block": block}),
        ));
        self.open = Some(open);
    }

    fn delta(&self, delta: Value, out: &mut Vec<Bytes>) {
        out.push(sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": self.index, "delta": delta}),
        ));
    }

    /// A `content_block_delta` of type `kind` whose one string member is `field`: the hot path
    /// (text, thinking and argument deltas), written without a `Value` tree.
    fn str_delta(&self, kind: &str, field: &str, text: &str, out: &mut Vec<Bytes>) {
        let mut s = String::with_capacity(text.len() + 120);
        s.push_str(
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
        );
        s.push_str(&self.index.to_string());
        s.push_str(",\"delta\":{\"type\":\"");
        s.push_str(kind);
        s.push_str("\",\"");
        s.push_str(field);
        s.push_str("\":");
        crate::api::push_json_str(&mut s, text);
        s.push_str("}}\n\n");
        out.push(Bytes::from(s));
    }
}

impl Encoder for MessagesEncoder {
    fn on_event(&mut self, ev: Event, out: &mut Vec<Bytes>) {
        self.start(out);
        match ev {
            Event::Text { content } => {
                if content.is_empty() {
                    return;
                }
                if !matches!(self.open, Some(Open::Text)) {
                    self.open(json!({"type": "text", "text": ""}), Open::Text, out);
                }
                self.meta.usage.add_output(&content);
                self.str_delta("text_delta", "text", &content, out);
            }
            Event::Reasoning { text, signature } => {
                if text.is_empty() && signature.is_none() {
                    return;
                }
                if !matches!(self.open, Some(Open::Thinking { .. })) {
                    self.open(
                        json!({"type": "thinking", "thinking": ""}),
                        Open::Thinking {
                            signer: Signer::new(),
                            signature: None,
                        },
                        out,
                    );
                }
                if let Some(Open::Thinking {
                    signer,
                    signature: sig,
                }) = &mut self.open
                {
                    signer.update(&text);
                    if signature.is_some() {
                        *sig = signature;
                    }
                }
                if !text.is_empty() {
                    self.meta.usage.add_reasoning(&text);
                    self.str_delta("thinking_delta", "thinking", &text, out);
                }
            }
            Event::RedactedReasoning { data } => {
                self.open(
                    json!({"type": "redacted_thinking", "data": data}),
                    Open::Text,
                    out,
                );
                self.close(out);
            }
            Event::ToolUse(t) => {
                self.check.push(&t);
                let same =
                    matches!(&self.open, Some(Open::Tool { id, .. }) if *id == t.tool_use_id);
                if !same {
                    self.called_tools = true;
                    self.meta.usage.add_output(&t.name);
                    self.open(
                        json!({"type": "tool_use", "id": t.tool_use_id, "name": t.name, "input": {}}),
                        Open::Tool {
                            id: t.tool_use_id.clone(),
                            split: SafeJsonSplitter::new(),
                        },
                        out,
                    );
                }
                let piece = match (&mut self.open, t.input) {
                    (Some(Open::Tool { split, .. }), ToolInput::Fragment(s)) => {
                        self.meta.usage.add_output(&s);
                        split.push(&s)
                    }
                    (Some(Open::Tool { split, .. }), ToolInput::Whole(v)) => {
                        let s = v.to_string();
                        self.meta.usage.add_output(&s);
                        split.push(&s)
                    }
                    _ => String::new(),
                };
                if !piece.is_empty() {
                    self.str_delta("input_json_delta", "partial_json", &piece, out);
                }
                if t.stop {
                    self.close(out);
                }
            }
            other => self.meta.usage.on_event(&other),
        }
    }

    fn on_end(&mut self, end: End, out: &mut Vec<Bytes>) {
        self.start(out);
        self.close(out);
        // a call cut short is closed as it is, and the answer stops as cut for length
        let end = if self.check.finish() {
            End::Length
        } else {
            end
        };
        let u = self.meta.usage.usage();
        out.push(sse_event(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason(end, &self.meta.usage, self.called_tools), "stop_sequence": null},
                    "usage": usage_json(&u)}),
        ));
        out.push(sse_event("message_stop", &json!({"type": "message_stop"})));
    }

    fn on_error(&mut self, err: GatewayError, out: &mut Vec<Bytes>) {
        self.start(out);
        out.push(sse_event(
            "error",
            &crate::api::Dialect::Anthropic.error_json(&err),
        ));
    }

    fn keepalive(&mut self) -> Option<Bytes> {
        Some(sse_event("ping", &json!({"type": "ping"})))
    }
}

/// Folds the stream into one `message`.
pub struct MessagesFolder {
    meta: ResponseMeta,
    /// text and tool calls in the order they came: `Ok(text)` / `Err(call index)`
    order: Vec<Result<String, usize>>,
    /// reasoning, which comes first
    thinking: String,
    /// the service's signature of the reasoning (native reasoning)
    signature: Option<String>,
    /// `redactedContent` blobs, in order
    redacted: Vec<String>,
    tools: ToolCallAssembler,
}

impl MessagesFolder {
    pub fn new(meta: ResponseMeta) -> Self {
        MessagesFolder {
            meta,
            order: Vec::new(),
            thinking: String::new(),
            signature: None,
            redacted: Vec::new(),
            tools: ToolCallAssembler::new(),
        }
    }
}

impl Folder for MessagesFolder {
    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Text { content } => {
                self.meta.usage.add_output(&content);
                match self.order.last_mut() {
                    Some(Ok(t)) => t.push_str(&content),
                    _ => self.order.push(Ok(content)),
                }
            }
            Event::Reasoning { text, signature } => {
                self.meta.usage.add_reasoning(&text);
                self.thinking.push_str(&text);
                if signature.is_some() {
                    self.signature = signature;
                }
            }
            Event::RedactedReasoning { data } => self.redacted.push(data),
            Event::ToolUse(t) => {
                self.meta.usage.add_tool_input(&t.input);
                let before = self.tools.calls().len();
                let idx = self.tools.push(&t);
                if self.tools.calls().len() > before {
                    self.order.push(Err(idx));
                }
            }
            other => self.meta.usage.on_event(&other),
        }
    }

    fn finish(self, end: End) -> Response<Body> {
        let calls = self.tools.into_calls();
        let mut cut_short = false;
        let mut content = Vec::with_capacity(self.order.len() + 1);
        if !self.thinking.is_empty() || self.signature.is_some() {
            let signature = self
                .signature
                .unwrap_or_else(|| crate::api::thinking::sign(&self.thinking));
            content.push(json!({"type": "thinking", "thinking": self.thinking,
                                "signature": signature}));
        }
        for data in self.redacted {
            content.push(json!({"type": "redacted_thinking", "data": data}));
        }
        for item in &self.order {
            match item {
                Ok(text) if !text.is_empty() => content.push(json!({"type": "text", "text": text})),
                Ok(_) => {}
                Err(i) => {
                    let Some(c) = calls.get(*i) else { continue };
                    // a call cut short has no input to give: it is left out (with a warning
                    // naming it) and the answer stops with `max_tokens`
                    if !crate::api::tool_call_complete(c) {
                        cut_short = true;
                        continue;
                    }
                    let input = c.parsed_arguments().unwrap_or_default();
                    content.push(json!({"type": "tool_use", "id": c.tool_use_id, "name": c.name, "input": input}));
                }
            }
        }
        let end = if cut_short { End::Length } else { end };
        let called_tools = content.iter().any(|b| b["type"] == "tool_use");
        let u = self.meta.usage.usage();
        let body = json!({
            "id": self.meta.id, "type": "message", "role": "assistant", "model": self.meta.model,
            "content": content, "stop_reason": stop_reason(end, &self.meta.usage, called_tools), "stop_sequence": null,
            "usage": usage_json(&u),
        });
        crate::api::answer_response(&body, u.credits)
    }
}
