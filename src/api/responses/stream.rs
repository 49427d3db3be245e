//! Kiro events → Responses stream events, and → one response object.
//!
//! Every event carries `type` and a `sequence_number` counting from 0. The stream opens with
//! `response.created` and `response.in_progress`; each output item is announced with
//! `response.output_item.added` and finished with `response.output_item.done`:
//! - reasoning: `response.reasoning_summary_part.added`, `response.reasoning_summary_text.delta`
//!   …, `.done`, `response.reasoning_summary_part.done`;
//! - text: `response.content_part.added`, `response.output_text.delta` …, `.done`,
//!   `response.content_part.done`;
//! - a function call: `response.function_call_arguments.delta` as each fragment arrives, then
//!   `.done`; a call to a freeform (`custom`) tool: `response.custom_tool_call_input.delta` and
//!   `.done` with the raw text once the call is complete (its JSON wrapping must be whole to
//!   be taken off).
//!
//! It ends with exactly one of `response.completed`, `response.incomplete` (cut for length,
//! `incomplete_details.reason: "max_output_tokens"`, also when a tool call was cut short) or
//! `response.failed` (an upstream failure: `error.code` is what Codex acts on —
//! `context_length_exceeded`, `rate_limit_exceeded`, `insufficient_quota`,
//! `server_is_overloaded`, else `server_error`). Long silences get `response.in_progress`
//! events, which Codex's idle timer counts (it ignores SSE comments). The non-streamed answer
//! is the same machine with its events dropped: the final response object.

use bytes::Bytes;
use http::Response;
use serde_json::{json, Map, Value};

use super::convert::{previous_items, ToolNames, CUSTOM_INPUT};
use super::{ResponseStore, ResponseStoreHandle, ResponsesRequest};
use crate::api::{new_id, sse_event, Body, Encoder, End, Folder, ResponseMeta};
use crate::error::{ErrorKind, GatewayError};
use crate::kiro::{Event, ToolInput};

/// What the encoder needs of the request.
pub struct Shape {
    /// custom and namespaced tools, whose calls go back under another type or name
    tools: ToolNames,
    /// Where the finished response goes (`None` with `store: false`).
    store: Option<ResponseStoreHandle>,
    /// The conversation so far (the chained responses' and this request's input items).
    history: Vec<Value>,
    /// Request fields echoed in the response object.
    echo: Map<String, Value>,
    encrypted_reasoning: bool,
}

impl Shape {
    pub fn of(req: &ResponsesRequest) -> Shape {
        let store = if req.keeps() {
            req.store_handle.clone()
        } else {
            None
        };
        let history = if store.is_some() {
            let mut h = previous_items(req).unwrap_or_default();
            h.extend(req.input_items().unwrap_or_default());
            h
        } else {
            Vec::new()
        };
        let mut echo = Map::new();
        echo.insert("instructions".into(), json!(req.instructions));
        echo.insert("max_output_tokens".into(), json!(req.max_output_tokens));
        echo.insert("metadata".into(), req.metadata.clone().unwrap_or(json!({})));
        echo.insert(
            "parallel_tool_calls".into(),
            json!(req.parallel_tool_calls.unwrap_or(true)),
        );
        echo.insert(
            "previous_response_id".into(),
            json!(req.previous_response_id),
        );
        echo.insert(
            "reasoning".into(),
            req.reasoning
                .clone()
                .unwrap_or(json!({"effort": null, "summary": null})),
        );
        echo.insert("store".into(), json!(req.keeps()));
        echo.insert(
            "text".into(),
            req.text
                .clone()
                .unwrap_or(json!({"format": {"type": "text"}})),
        );
        echo.insert(
            "tool_choice".into(),
            req.tool_choice.clone().unwrap_or(json!("auto")),
        );
        echo.insert("tools".into(), json!(req.tools.clone().unwrap_or_default()));
        echo.insert("temperature".into(), Value::Null);
        echo.insert("top_p".into(), Value::Null);
        echo.insert("truncation".into(), json!("disabled"));
        echo.insert("user".into(), Value::Null);
        Shape {
            tools: ToolNames::of(req),
            store,
            history,
            echo,
            encrypted_reasoning: req
                .include
                .iter()
                .flatten()
                .any(|i| i == "reasoning.encrypted_content"),
        }
    }
}

enum Open {
    Reasoning {
        id: String,
        text: String,
        signature: Option<String>,
    },
    Message {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        /// the client's name of the tool (the inner name of a namespaced one)
        name: String,
        /// the namespace of a namespaced tool
        namespace: Option<String>,
        args: String,
        custom: bool,
    },
}

/// A call item: `function_call` (arguments) or `custom_tool_call` (raw input), with
/// `namespace` for a namespaced tool.
fn call_item(
    custom: bool,
    id: &str,
    call_id: &str,
    name: &str,
    namespace: Option<&str>,
    payload: &str,
    status: &str,
) -> Value {
    let mut item = if custom {
        json!({"type": "custom_tool_call", "id": id, "call_id": call_id, "name": name,
               "input": payload, "status": status})
    } else {
        json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
               "arguments": payload, "status": status})
    };
    if let Some(ns) = namespace {
        item["namespace"] = json!(ns);
    }
    item
}

/// The Responses state machine; see the module docs.
pub struct ResponsesEncoder {
    shape: Shape,
    meta: ResponseMeta,
    /// events are built (stream) or only the final object is (non-stream)
    emit: bool,
    seq: u64,
    started: bool,
    items: Vec<Value>,
    open: Option<Open>,
    /// a tool call's arguments were not complete JSON when it closed
    cut_short: bool,
}

impl ResponsesEncoder {
    pub fn new(shape: Shape, meta: ResponseMeta) -> Self {
        ResponsesEncoder {
            shape,
            meta,
            emit: true,
            seq: 0,
            started: false,
            items: Vec::new(),
            open: None,
            cut_short: false,
        }
    }

    fn ev(&mut self, kind: &str, mut payload: Value, out: &mut Vec<Bytes>) {
        let seq = self.seq;
        self.seq += 1;
        if !self.emit {
            return;
        }
        payload["type"] = json!(kind);
        payload["sequence_number"] = json!(seq);
        out.push(sse_event(kind, &payload));
    }

    /// A delta event (`item_id`, `output_index`, optional `content_index` / `summary_index`,
    /// `delta`): the hot path, written without a `Value` tree.
    fn delta(
        &mut self,
        kind: &str,
        item_id: &str,
        index_field: Option<&str>,
        delta: &str,
        out: &mut Vec<Bytes>,
    ) {
        let seq = self.seq;
        self.seq += 1;
        if !self.emit {
            return;
        }
        let mut s = String::with_capacity(delta.len() + 160);
        s.push_str("event: ");
        s.push_str(kind);
        s.push_str("\ndata: {\"type\":\"");
        s.push_str(kind);
        s.push_str("\",\"sequence_number\":");
        s.push_str(&seq.to_string());
        s.push_str(",\"item_id\":");
        crate::api::push_json_str(&mut s, item_id);
        s.push_str(",\"output_index\":");
        s.push_str(&self.items.len().to_string());
        if let Some(f) = index_field {
            s.push_str(",\"");
            s.push_str(f);
            s.push_str("\":0");
        }
        if kind == "response.output_text.delta" {
            s.push_str(",\"logprobs\":[]");
        }
        s.push_str(",\"delta\":");
        crate::api::push_json_str(&mut s, delta);
        s.push_str("}\n\n");
        out.push(Bytes::from(s));
    }

    fn usage_json(&self) -> Value {
        let u = self.meta.usage.usage();
        let mut v = json!({
            "input_tokens": u.prompt_tokens,
            "output_tokens": u.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            "total_tokens": u.total(),
        });
        if let Some(c) = u.cache_read_tokens {
            v["input_tokens_details"] = json!({"cached_tokens": c});
        }
        v["kiro"] = u.kiro_json();
        v
    }

    /// The response object in its current state.
    fn response(&self, status: &str) -> Value {
        let mut r = Map::new();
        r.insert("id".into(), json!(self.meta.id));
        r.insert("object".into(), json!("response"));
        r.insert("created_at".into(), json!(self.meta.created));
        r.insert("status".into(), json!(status));
        r.insert("error".into(), Value::Null);
        r.insert("incomplete_details".into(), Value::Null);
        r.insert("model".into(), json!(self.meta.model));
        r.insert("output".into(), Value::Array(self.items.clone()));
        for (k, v) in &self.shape.echo {
            r.insert(k.clone(), v.clone());
        }
        r.insert(
            "usage".into(),
            if status == "in_progress" {
                Value::Null
            } else {
                self.usage_json()
            },
        );
        Value::Object(r)
    }

    fn start(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let r = self.response("in_progress");
        self.ev("response.created", json!({"response": r}), out);
        self.ev("response.in_progress", json!({"response": r}), out);
    }

    fn open_item(&mut self, open: Open, item: Value, out: &mut Vec<Bytes>) {
        self.close(out);
        let idx = self.items.len();
        self.ev(
            "response.output_item.added",
            json!({"output_index": idx, "item": item}),
            out,
        );
        self.open = Some(open);
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        self.close_item(false, out);
    }

    /// Finish the open item. `failed`: the answer broke off; the item goes into the failed
    /// response as `incomplete`, without the `.done` events of a finished item.
    fn close_item(&mut self, failed: bool, out: &mut Vec<Bytes>) {
        let Some(open) = self.open.take() else { return };
        if failed {
            let item = match open {
                Open::Reasoning { id, text, .. } => json!({"type": "reasoning", "id": id,
                    "summary": [{"type": "summary_text", "text": text}], "status": "incomplete"}),
                Open::Message { id, text } => {
                    json!({"type": "message", "id": id, "role": "assistant",
                    "status": "incomplete", "content": [{"type": "output_text", "text": text, "annotations": []}]})
                }
                Open::Call {
                    id,
                    call_id,
                    name,
                    namespace,
                    args,
                    custom,
                } => call_item(
                    custom,
                    &id,
                    &call_id,
                    &name,
                    namespace.as_deref(),
                    &args,
                    "incomplete",
                ),
            };
            self.items.push(item);
            return;
        }
        let idx = self.items.len();
        let item = match open {
            Open::Reasoning {
                id,
                text,
                signature,
            } => {
                let part = json!({"type": "summary_text", "text": text});
                self.ev(
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": idx, "summary_index": 0, "text": text}),
                    out,
                );
                self.ev(
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": idx, "summary_index": 0, "part": part}),
                    out,
                );
                let mut item = json!({"type": "reasoning", "id": id, "summary": [part]});
                if self.shape.encrypted_reasoning {
                    item["encrypted_content"] = json!(signature);
                }
                item
            }
            Open::Message { id, text } => {
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                self.ev(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": idx, "content_index": 0, "text": text, "logprobs": []}),
                    out,
                );
                self.ev(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": idx, "content_index": 0, "part": part}),
                    out,
                );
                json!({"type": "message", "id": id, "role": "assistant", "status": "completed",
                       "content": [part]})
            }
            Open::Call {
                id,
                call_id,
                name,
                namespace,
                args,
                custom,
            } => {
                let complete = serde_json::from_str::<Value>(if args.trim().is_empty() {
                    "{}"
                } else {
                    &args
                });
                let status = if complete.is_ok() {
                    "completed"
                } else {
                    tracing::warn!(
                        tool = %name,
                        id = %call_id,
                        bytes = args.len(),
                        "Kiro cut a tool call short: its arguments are not complete JSON; the answer ends as cut for length"
                    );
                    self.cut_short = true;
                    "incomplete"
                };
                if custom {
                    // the raw text travels as the one string argument; a call cut short keeps
                    // what arrived, as it arrived
                    let input = match &complete {
                        Ok(v) => match v.get(CUSTOM_INPUT) {
                            Some(Value::String(s)) => s.clone(),
                            Some(other) => other.to_string(),
                            None => String::new(),
                        },
                        Err(_) => args.clone(),
                    };
                    self.delta(
                        "response.custom_tool_call_input.delta",
                        &id,
                        None,
                        &input,
                        out,
                    );
                    self.ev(
                        "response.custom_tool_call_input.done",
                        json!({"item_id": id, "output_index": idx, "input": input}),
                        out,
                    );
                    call_item(
                        true,
                        &id,
                        &call_id,
                        &name,
                        namespace.as_deref(),
                        &input,
                        status,
                    )
                } else {
                    self.ev(
                        "response.function_call_arguments.done",
                        json!({"item_id": id, "output_index": idx, "name": name, "arguments": args}),
                        out,
                    );
                    call_item(
                        false,
                        &id,
                        &call_id,
                        &name,
                        namespace.as_deref(),
                        &args,
                        status,
                    )
                }
            }
        };
        self.ev(
            "response.output_item.done",
            json!({"output_index": idx, "item": item}),
            out,
        );
        self.items.push(item);
    }

    /// Close everything and build the final response; keeps it when the request allows.
    fn finish_response(&mut self, end: End, out: &mut Vec<Bytes>) -> Value {
        self.start(out);
        self.close(out);
        let cut = self.cut_short;
        let stop = crate::api::Stop::of(end, self.meta.usage.stop_reason(), false);
        let length = cut
            || matches!(
                stop,
                crate::api::Stop::MaxTokens | crate::api::Stop::ContextWindow
            );
        let mut r = self.response(if length { "incomplete" } else { "completed" });
        if length {
            r["incomplete_details"] = json!({"reason": "max_output_tokens"});
        }
        if let Some(store) = &self.shape.store {
            let mut items = std::mem::take(&mut self.shape.history);
            items.extend(self.items.iter().cloned());
            store.put(self.meta.id.clone(), r.clone(), items);
        }
        let kind = if length {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.ev(kind, json!({"response": r}), out);
        r
    }
}

/// `error.code` of a failed response, in the words Codex acts on.
fn failure_code(e: &GatewayError) -> &'static str {
    match (e.kind(), e.code()) {
        (_, Some("context_length_exceeded")) => "context_length_exceeded",
        (_, Some("insufficient_quota")) => "insufficient_quota",
        (ErrorKind::RateLimit, _) => "rate_limit_exceeded",
        (ErrorKind::Overloaded, _) => "server_is_overloaded",
        (ErrorKind::InvalidRequest, _) => "invalid_prompt",
        _ => "server_error",
    }
}

impl Encoder for ResponsesEncoder {
    fn on_event(&mut self, ev: Event, out: &mut Vec<Bytes>) {
        self.start(out);
        match ev {
            Event::Text { content } => {
                if content.is_empty() {
                    return;
                }
                self.meta.usage.add_output(&content);
                if !matches!(self.open, Some(Open::Message { .. })) {
                    let id = new_id("msg_");
                    self.open_item(
                        Open::Message {
                            id: id.clone(),
                            text: String::new(),
                        },
                        json!({"type": "message", "id": id, "role": "assistant", "status": "in_progress", "content": []}),
                        out,
                    );
                    self.ev(
                        "response.content_part.added",
                        json!({"item_id": id, "output_index": self.items.len(), "content_index": 0,
                               "part": {"type": "output_text", "text": "", "annotations": []}}),
                        out,
                    );
                }
                let id = match &mut self.open {
                    Some(Open::Message { id, text }) => {
                        text.push_str(&content);
                        id.clone()
                    }
                    _ => return,
                };
                self.delta(
                    "response.output_text.delta",
                    &id,
                    Some("content_index"),
                    &content,
                    out,
                );
            }
            Event::Reasoning { text, signature } => {
                if text.is_empty() && signature.is_none() {
                    return;
                }
                if !matches!(self.open, Some(Open::Reasoning { .. })) {
                    let id = new_id("rs_");
                    self.open_item(
                        Open::Reasoning {
                            id: id.clone(),
                            text: String::new(),
                            signature: None,
                        },
                        json!({"type": "reasoning", "id": id, "summary": []}),
                        out,
                    );
                    self.ev(
                        "response.reasoning_summary_part.added",
                        json!({"item_id": id, "output_index": self.items.len(), "summary_index": 0,
                               "part": {"type": "summary_text", "text": ""}}),
                        out,
                    );
                }
                let id = match &mut self.open {
                    Some(Open::Reasoning {
                        id,
                        text: t,
                        signature: sig,
                    }) => {
                        t.push_str(&text);
                        if signature.is_some() {
                            *sig = signature;
                        }
                        id.clone()
                    }
                    _ => return,
                };
                if !text.is_empty() {
                    self.meta.usage.add_reasoning(&text);
                    self.delta(
                        "response.reasoning_summary_text.delta",
                        &id,
                        Some("summary_index"),
                        &text,
                        out,
                    );
                }
            }
            Event::ToolUse(t) => {
                let same = matches!(&self.open, Some(Open::Call { call_id, .. }) if *call_id == t.tool_use_id);
                if !same {
                    self.meta.usage.add_output(&t.name);
                    let custom = self.shape.tools.custom.contains(&t.name);
                    let id = new_id(if custom { "ctc_" } else { "fc_" });
                    // a namespaced tool goes back under its own name, with its namespace
                    let (name, namespace) = match self.shape.tools.namespaced.get(&t.name) {
                        Some((ns, inner)) => (inner.clone(), Some(ns.clone())),
                        None => (t.name.clone(), None),
                    };
                    let item = call_item(
                        custom,
                        &id,
                        &t.tool_use_id,
                        &name,
                        namespace.as_deref(),
                        "",
                        "in_progress",
                    );
                    self.open_item(
                        Open::Call {
                            id,
                            call_id: t.tool_use_id.clone(),
                            name,
                            namespace,
                            args: String::new(),
                            custom,
                        },
                        item,
                        out,
                    );
                }
                let piece = match t.input {
                    ToolInput::None => String::new(),
                    ToolInput::Fragment(s) => s,
                    ToolInput::Whole(v) => v.to_string(),
                };
                let mut forward = None;
                if let Some(Open::Call {
                    id, args, custom, ..
                }) = &mut self.open
                {
                    args.push_str(&piece);
                    if !*custom && !piece.is_empty() {
                        forward = Some(id.clone());
                    }
                }
                self.meta.usage.add_output(&piece);
                if let Some(id) = forward {
                    self.delta(
                        "response.function_call_arguments.delta",
                        &id,
                        None,
                        &piece,
                        out,
                    );
                }
                if t.stop {
                    self.close(out);
                }
            }
            other => self.meta.usage.on_event(&other),
        }
    }

    fn on_end(&mut self, end: End, out: &mut Vec<Bytes>) {
        self.finish_response(end, out);
    }

    fn on_error(&mut self, err: GatewayError, out: &mut Vec<Bytes>) {
        self.start(out);
        self.close_item(true, out);
        let mut r = self.response("failed");
        r["error"] = json!({"code": failure_code(&err), "message": err.message()});
        self.ev("response.failed", json!({"response": r}), out);
    }

    /// Codex's idle timer counts parsed events only: a silent upstream gets
    /// `response.in_progress` events rather than SSE comments.
    fn keepalive(&mut self) -> Option<Bytes> {
        let mut out = Vec::new();
        if !self.started {
            self.start(&mut out);
        } else {
            let r = self.response("in_progress");
            self.ev("response.in_progress", json!({"response": r}), &mut out);
        }
        let bytes: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
        Some(Bytes::from(bytes))
    }
}

/// The non-streamed answer: the same machine, events dropped.
pub struct ResponsesFolder(ResponsesEncoder);

impl ResponsesFolder {
    pub fn new(shape: Shape, meta: ResponseMeta) -> Self {
        let mut e = ResponsesEncoder::new(shape, meta);
        e.emit = false;
        ResponsesFolder(e)
    }
}

impl Folder for ResponsesFolder {
    fn on_event(&mut self, ev: Event) {
        self.0.on_event(ev, &mut Vec::new());
    }

    fn finish(mut self, end: End) -> Response<Body> {
        let r = self.0.finish_response(end, &mut Vec::new());
        let credits = self.0.meta.usage.usage().credits;
        crate::api::answer_response(&r, credits)
    }
}
