//! Kiro events → OpenAI `chat.completion.chunk` SSE, and → one `chat.completion`.
//!
//! Stream: the first chunk carries `role: "assistant"`; text deltas are forwarded as they
//! arrive; a tool call opens with a delta carrying `index`, `id`, `type` and `function.name`,
//! and its argument fragments follow as `function.arguments` deltas the moment they arrive
//! (the fragments are raw slices of the argument JSON, and OpenAI clients concatenate them, so
//! no buffering is needed). The end is a chunk with `finish_reason` (`tool_calls` when the
//! answer called tools, `length` when Kiro cut the output with
//! `ContentLengthExceededException`, else `stop`), then, with `stream_options.include_usage`, the usage
//! chunk (`choices: []`) — without it the usage rides on the finish chunk — then `[DONE]`.
//! A failure sends one `data: {"error":…}` and ends: no finish reason, no `[DONE]`.

use bytes::Bytes;
use http::Response;
use serde_json::{json, Value};

use crate::api::usage::Usage;
use crate::api::{sse_data, Body, Encoder, End, Folder, ResponseMeta};
use crate::error::GatewayError;
use crate::kiro::{Event, ToolCallAssembler, ToolInput};

/// The `usage` object: `prompt_tokens_details.cached_tokens` only when the service reported
/// a cache figure, `usage.kiro` with the figures' source and the credits.
pub fn usage_json(u: &Usage) -> Value {
    let mut v = json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total(),
    });
    if u.reasoning_tokens > 0 {
        v["completion_tokens_details"] = json!({"reasoning_tokens": u.reasoning_tokens});
    }
    if let Some(c) = u.cache_read_tokens {
        v["prompt_tokens_details"] = json!({"cached_tokens": c});
    }
    if let Some(c) = u.credits {
        v["credits_used"] = json!(c);
    }
    v["kiro"] = u.kiro_json();
    v
}

/// `length` when the output was cut, `tool_calls` when tools were called, … (see [`Stop`]).
fn finish_reason(
    end: End,
    usage: &crate::api::usage::UsageTracker,
    called_tools: bool,
) -> &'static str {
    crate::api::Stop::of(end, usage.stop_reason(), called_tools).openai()
}

/// Streams chunks (see the module docs).
pub struct ChatEncoder {
    meta: ResponseMeta,
    include_usage: bool,
    role_sent: bool,
    /// Tool-call ids in the order they opened; the position is the OpenAI `index`.
    tool_ids: Vec<String>,
    /// Finds a call the service cut short.
    check: crate::api::ToolCallCheck,
    /// `data: {"id":…,"object":…,"created":…,"model":…,"choices":[{"index":0,"delta":{`, built
    /// once: the hot path writes a delta by appending to it, without a `Value` tree.
    head: String,
}

const DELTA_TAIL: &str = "},\"finish_reason\":null}]}\n\n";

impl ChatEncoder {
    pub fn new(meta: ResponseMeta, include_usage: bool) -> Self {
        let mut head = String::with_capacity(160);
        head.push_str("data: {\"id\":");
        crate::api::push_json_str(&mut head, &meta.id);
        head.push_str(",\"object\":\"chat.completion.chunk\",\"created\":");
        head.push_str(&meta.created.to_string());
        head.push_str(",\"model\":");
        crate::api::push_json_str(&mut head, &meta.model);
        head.push_str(",\"choices\":[{\"index\":0,\"delta\":{");
        ChatEncoder {
            meta,
            include_usage,
            role_sent: false,
            tool_ids: Vec::new(),
            check: Default::default(),
            head,
        }
    }

    /// One delta chunk whose delta is `{"<field>": "<text>"}` (plus the role on the first).
    fn text_delta(&mut self, field: &str, text: &str, out: &mut Vec<Bytes>) {
        let mut s = String::with_capacity(self.head.len() + text.len() + 64);
        s.push_str(&self.head);
        if !self.role_sent {
            self.role_sent = true;
            s.push_str("\"role\":\"assistant\",");
        }
        s.push('"');
        s.push_str(field);
        s.push_str("\":");
        crate::api::push_json_str(&mut s, text);
        s.push_str(DELTA_TAIL);
        out.push(Bytes::from(s));
    }

    /// One delta chunk carrying an argument fragment of tool call `index`.
    fn args_delta(&mut self, index: usize, args: &str, out: &mut Vec<Bytes>) {
        let mut s = String::with_capacity(self.head.len() + args.len() + 80);
        s.push_str(&self.head);
        if !self.role_sent {
            self.role_sent = true;
            s.push_str("\"role\":\"assistant\",");
        }
        s.push_str("\"tool_calls\":[{\"index\":");
        s.push_str(&index.to_string());
        s.push_str(",\"function\":{\"arguments\":");
        crate::api::push_json_str(&mut s, args);
        s.push_str("}}]");
        s.push_str(DELTA_TAIL);
        out.push(Bytes::from(s));
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.meta.id,
            "object": "chat.completion.chunk",
            "created": self.meta.created,
            "model": self.meta.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }

    fn delta(&mut self, mut delta: Value, out: &mut Vec<Bytes>) {
        if !self.role_sent {
            self.role_sent = true;
            delta["role"] = json!("assistant");
        }
        out.push(sse_data(&self.chunk(delta, None)));
    }
}

impl Encoder for ChatEncoder {
    fn on_event(&mut self, ev: Event, out: &mut Vec<Bytes>) {
        match ev {
            Event::Text { content } => {
                if content.is_empty() {
                    return;
                }
                self.meta.usage.add_output(&content);
                self.text_delta("content", &content, out);
            }
            Event::Reasoning { text, .. } => {
                if text.is_empty() {
                    return;
                }
                self.meta.usage.add_reasoning(&text);
                self.text_delta("reasoning_content", &text, out);
            }
            Event::ToolUse(t) => {
                self.check.push(&t);
                let index = match self.tool_ids.iter().position(|id| *id == t.tool_use_id) {
                    Some(i) => i,
                    None => {
                        self.tool_ids.push(t.tool_use_id.clone());
                        let i = self.tool_ids.len() - 1;
                        self.meta.usage.add_output(&t.name);
                        self.delta(
                            json!({"tool_calls": [{"index": i, "id": t.tool_use_id, "type": "function",
                                   "function": {"name": t.name, "arguments": ""}}]}),
                            out,
                        );
                        i
                    }
                };
                let args = match t.input {
                    ToolInput::None => return,
                    ToolInput::Fragment(s) => s,
                    ToolInput::Whole(v) => v.to_string(),
                };
                self.meta.usage.add_output(&args);
                self.args_delta(index, &args, out);
            }
            other => self.meta.usage.on_event(&other),
        }
    }

    fn on_end(&mut self, end: End, out: &mut Vec<Bytes>) {
        if !self.role_sent {
            self.delta(json!({"content": ""}), out);
        }
        // a call cut short is no tool call to run: the answer was cut for length
        let end = if self.check.finish() {
            End::Length
        } else {
            end
        };
        let finish = finish_reason(end, &self.meta.usage, !self.tool_ids.is_empty());
        let usage = usage_json(&self.meta.usage.usage());
        let mut last = self.chunk(json!({}), Some(finish));
        if self.include_usage {
            out.push(sse_data(&last));
            let mut u = self.chunk(json!({}), None);
            u["choices"] = json!([]);
            u["usage"] = usage;
            out.push(sse_data(&u));
        } else {
            last["usage"] = usage;
            out.push(sse_data(&last));
        }
        out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    }

    fn on_error(&mut self, err: GatewayError, out: &mut Vec<Bytes>) {
        out.push(sse_data(&super::error_json(&err)));
    }
}

/// Folds the stream into one `chat.completion`.
pub struct ChatFolder {
    meta: ResponseMeta,
    text: String,
    reasoning: String,
    tools: ToolCallAssembler,
}

impl ChatFolder {
    pub fn new(meta: ResponseMeta) -> Self {
        ChatFolder {
            meta,
            text: String::new(),
            reasoning: String::new(),
            tools: ToolCallAssembler::new(),
        }
    }
}

impl Folder for ChatFolder {
    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Text { content } => {
                self.meta.usage.add_output(&content);
                self.text.push_str(&content);
            }
            Event::Reasoning { text, .. } => {
                self.meta.usage.add_reasoning(&text);
                self.reasoning.push_str(&text);
            }
            Event::ToolUse(t) => {
                self.meta.usage.add_tool_input(&t.input);
                self.tools.push(&t);
            }
            other => self.meta.usage.on_event(&other),
        }
    }

    fn finish(self, end: End) -> Response<Body> {
        let calls = self.tools.into_calls();
        // a call cut short keeps the arguments as received, and the answer ends with `length`
        let cut = calls
            .iter()
            .filter(|c| !crate::api::tool_call_complete(c))
            .count();
        let end = if cut > 0 { End::Length } else { end };
        let mut message = json!({"role": "assistant", "content": self.text});
        if !self.reasoning.is_empty() {
            message["reasoning_content"] = json!(self.reasoning);
        }
        if !calls.is_empty() {
            message["tool_calls"] = Value::Array(
                calls
                    .iter()
                    .map(|c| {
                        json!({"id": c.tool_use_id, "type": "function",
                               "function": {"name": c.name, "arguments": c.arguments}})
                    })
                    .collect(),
            );
        }
        let finish = finish_reason(end, &self.meta.usage, !calls.is_empty());
        let usage = self.meta.usage.usage();
        let body = json!({
            "id": self.meta.id,
            "object": "chat.completion",
            "created": self.meta.created,
            "model": self.meta.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
            "usage": usage_json(&usage),
        });
        crate::api::answer_response(&body, usage.credits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::usage::UsageTracker;
    use crate::kiro::events::{Metering, ToolUseEvent};

    fn meta() -> ResponseMeta {
        ResponseMeta {
            id: "chatcmpl-1".into(),
            created: 1,
            model: "claude-sonnet-4-5".into(),
            usage: UsageTracker::new(10, 200_000),
        }
    }

    fn parse(out: &[Bytes]) -> Vec<Value> {
        out.iter()
            .map(|b| {
                let s = std::str::from_utf8(b).unwrap();
                let d = s.strip_prefix("data: ").unwrap().trim_end();
                if d == "[DONE]" {
                    json!("[DONE]")
                } else {
                    serde_json::from_str(d).unwrap()
                }
            })
            .collect()
    }

    fn tool(id: &str, input: ToolInput, stop: bool) -> Event {
        Event::ToolUse(ToolUseEvent {
            tool_use_id: id.into(),
            name: "f".into(),
            input,
            stop,
        })
    }

    #[test]
    fn streams_role_text_tool_deltas_finish_usage_done() {
        let mut e = ChatEncoder::new(meta(), true);
        let mut out = Vec::new();
        e.on_event(
            Event::Text {
                content: "Hi".into(),
            },
            &mut out,
        );
        e.on_event(tool("t1", ToolInput::None, false), &mut out);
        e.on_event(
            tool("t1", ToolInput::Fragment("{\"a\":\"x\\".into()), false),
            &mut out,
        );
        e.on_event(
            tool("t1", ToolInput::Fragment("\"y\"}".into()), false),
            &mut out,
        );
        e.on_event(tool("t1", ToolInput::None, true), &mut out);
        e.on_event(
            Event::Metering(Metering {
                unit: None,
                unit_plural: None,
                usage: 0.5,
            }),
            &mut out,
        );
        e.on_end(End::Complete, &mut out);
        let v = parse(&out);
        assert_eq!(
            v[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": "Hi"})
        );
        assert_eq!(v[1]["choices"][0]["delta"]["tool_calls"][0]["id"], "t1");
        assert_eq!(
            v[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            "f"
        );
        let args: String = v[2..4]
            .iter()
            .map(|c| {
                c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(args, "{\"a\":\"x\\\"y\"}");
        assert_eq!(v[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v[5]["choices"], json!([]));
        assert_eq!(v[5]["usage"]["credits_used"], 0.5);
        assert_eq!(v[6], json!("[DONE]"));
        assert_eq!(v.len(), 7);
    }

    #[test]
    fn errors_never_look_like_success() {
        let mut e = ChatEncoder::new(meta(), false);
        let mut out = Vec::new();
        e.on_event(
            Event::Text {
                content: "partial".into(),
            },
            &mut out,
        );
        e.on_error(GatewayError::from(crate::kiro::Error::Truncated), &mut out);
        let v = parse(&out);
        assert_eq!(v.len(), 2);
        assert!(v[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ended before"));
        assert!(v
            .iter()
            .all(|c| c != "[DONE]" && c["choices"][0]["finish_reason"].is_null()));
    }
}
