//! OpenAI chat request → [`Conversation`].
//!
//! Honoured: every role (`system`/`developer` → system prompt, `user`, `assistant` with
//! `tool_calls` or legacy `function_call`, `tool`), text and `image_url` data-URL parts, `tools`
//! (nested and flat forms), `tool_choice` (`none` removes the tools, `required` and a named
//! function are asked for in the system prompt), `response_format` (`json_object` /
//! `json_schema`, asked for in the system prompt). Knowingly ignored, because Kiro has no such
//! controls: `temperature`, `top_p`, `max_tokens` / `max_completion_tokens`, `stop`, `seed`,
//! `logprobs`, `parallel_tool_calls`. Refused with 400: `n` > 1, remote image URLs (the gateway
//! does not fetch URLs on a client's behalf), audio and file parts, the legacy `function` role.

use serde_json::Value;

use super::types::{ChatCompletionRequest, ChatMessage};
use crate::api::conversation::{
    image_from_data, Conversation, Message, Role, ToolCall, ToolChoice, ToolDef, ToolResultMsg,
};
use crate::error::GatewayError;

/// A refusal naming its place (`messages[0].content[1]: …`), with the full path as `param`.
fn bad(msg: impl Into<String>, param: impl Into<String>) -> GatewayError {
    crate::api::preflight::refusal(msg.into(), param)
}

/// Text of a content value (string, list of text parts, or null).
fn content_text(content: &Option<Value>, param: &str) -> Result<String, GatewayError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for (i, p) in parts.iter().enumerate() {
                let t = match p.get("type").and_then(Value::as_str) {
                    Some("text") | Some("input_text") | Some("output_text") => {
                        p.get("text").and_then(Value::as_str).unwrap_or_default()
                    }
                    Some("refusal") => p.get("refusal").and_then(Value::as_str).unwrap_or_default(),
                    other => {
                        return Err(bad(
                            format!("content part type {other:?} is not supported here"),
                            format!("{param}[{i}].type"),
                        ))
                    }
                };
                if !out.is_empty() && !t.is_empty() {
                    out.push('\n');
                }
                out.push_str(t);
            }
            Ok(out)
        }
        Some(_) => Err(bad("content must be a string or a list of parts", param)),
    }
}

fn user_message(m: &ChatMessage, param: &str) -> Result<Message, GatewayError> {
    let mut msg = Message::new(Role::User);
    match &m.content {
        Some(Value::Array(parts)) => {
            for (i, p) in parts.iter().enumerate() {
                let pp = format!("{param}.content[{i}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") | Some("input_text") => {
                        msg.push_text(p.get("text").and_then(Value::as_str).unwrap_or_default())
                    }
                    Some("image_url") => {
                        let url = p
                            .get("image_url")
                            .and_then(|u| u.get("url").or(Some(u)))
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        if url.starts_with("http://") || url.starts_with("https://") {
                            return Err(bad(
                                "remote image URLs are not supported: send the image inline as a data:image/...;base64 URL",
                                format!("{pp}.image_url.url"),
                            ));
                        }
                        let mut img = image_from_data(url, None)
                            .map_err(|e| bad(e, format!("{pp}.image_url.url")))?;
                        img.place = Some(pp);
                        msg.images.push(img);
                    }
                    other => {
                        return Err(bad(
                            format!(
                            "content part type {other:?} is not supported (text and image_url are)"
                        ),
                            format!("{pp}.type"),
                        ))
                    }
                }
            }
        }
        other => msg.text = content_text(other, &format!("{param}.content"))?,
    }
    Ok(msg)
}

fn parse_arguments(args: &Value, param: &str) -> Result<Value, GatewayError> {
    match args {
        Value::Null => Ok(Value::Object(Default::default())),
        Value::String(s) if s.trim().is_empty() => Ok(Value::Object(Default::default())),
        Value::String(s) => {
            let v: Value = serde_json::from_str(s).map_err(|e| {
                bad(
                    format!("tool call arguments are not valid JSON: {e}"),
                    param,
                )
            })?;
            Ok(v)
        }
        Value::Object(_) => Ok(args.clone()),
        _ => Err(bad("tool call arguments must be a JSON string", param)),
    }
}

fn tool_def(t: &Value, i: usize) -> Result<Option<ToolDef>, GatewayError> {
    let param = format!("tools[{i}]");
    let kind = t.get("type").and_then(Value::as_str).unwrap_or("function");
    if kind != "function" {
        tracing::debug!(kind, "skipping a non-function tool");
        return Ok(None);
    }
    // nested {"type":"function","function":{...}} or flat {"name","description","parameters"|"input_schema"}
    let f = t.get("function").unwrap_or(t);
    let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
        bad(
            "a function tool needs a name",
            format!("{param}.function.name"),
        )
    })?;
    let description = f
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let schema = f
        .get("parameters")
        .or_else(|| f.get("input_schema"))
        .cloned()
        .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}));
    Ok(Some(ToolDef {
        name: name.to_owned(),
        description: description.to_owned(),
        schema,
    }))
}

fn tool_choice(v: &Option<Value>) -> Result<ToolChoice, GatewayError> {
    Ok(match v {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" | "any" => ToolChoice::Required,
            other => {
                return Err(bad(
                    format!("tool_choice {other:?} is not one of none, auto, required"),
                    "tool_choice",
                ))
            }
        },
        Some(obj) => match obj
            .get("function")
            .and_then(|f| f.get("name"))
            .or_else(|| obj.get("name"))
            .and_then(Value::as_str)
        {
            Some(n) => ToolChoice::Named(n.to_owned()),
            None => return Err(bad("tool_choice names no function", "tool_choice")),
        },
    })
}

fn response_format_instruction(v: &Option<Value>) -> Option<String> {
    let v = v.as_ref()?;
    match v.get("type").and_then(Value::as_str)? {
        "json_object" => Some("Answer with a single valid JSON object and nothing else.".into()),
        "json_schema" => {
            let schema = v
                .get("json_schema")
                .and_then(|s| s.get("schema"))
                .map(Value::to_string)
                .unwrap_or_else(|| "{}".into());
            Some(format!(
                "Answer with a single JSON value that validates against this JSON schema, and nothing else (no prose, no code fences):\n{schema}"
            ))
        }
        _ => None,
    }
}

/// Convert the request (see the module docs).
pub fn to_conversation(req: &ChatCompletionRequest) -> Result<Conversation, GatewayError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(bad(
            "n > 1 is not supported: Kiro returns one answer per request",
            "n",
        ));
    }
    if req.messages.is_empty() {
        return Err(bad("messages must not be empty", "messages"));
    }
    for (name, v) in [
        ("max_tokens", req.max_tokens),
        ("max_completion_tokens", req.max_completion_tokens),
    ] {
        if v == Some(0) {
            return Err(bad(format!("{name} must be at least 1"), name));
        }
    }
    let mut system_parts = Vec::new();
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        let before = messages.len();
        match m.role.as_str() {
            "system" | "developer" => {
                let t = content_text(&m.content, &format!("{param}.content"))?;
                if !t.trim().is_empty() {
                    system_parts.push(t);
                }
            }
            "user" => messages.push(user_message(m, &param)?),
            "assistant" => {
                let mut msg = Message::new(Role::Assistant);
                msg.text = content_text(&m.content, &format!("{param}.content"))?;
                for (j, c) in m.tool_calls.iter().flatten().enumerate() {
                    msg.tool_calls.push(ToolCall {
                        id: c.id.clone(),
                        name: c.function.name.clone(),
                        input: parse_arguments(
                            &c.function.arguments,
                            &format!("{param}.tool_calls[{j}].function.arguments"),
                        )?,
                    });
                }
                if let Some(fc) = &m.function_call {
                    msg.tool_calls.push(ToolCall {
                        id: format!("call_{}", fc.name),
                        name: fc.name.clone(),
                        input: parse_arguments(
                            &fc.arguments,
                            &format!("{param}.function_call.arguments"),
                        )?,
                    });
                }
                messages.push(msg);
            }
            "tool" => {
                let id = m.tool_call_id.clone().ok_or_else(|| {
                    bad(
                        "a tool message needs tool_call_id",
                        format!("{param}.tool_call_id"),
                    )
                })?;
                let mut msg = Message::new(Role::User);
                msg.tool_results.push(ToolResultMsg {
                    id,
                    text: content_text(&m.content, &format!("{param}.content"))?,
                    is_error: false,
                });
                messages.push(msg);
            }
            "function" => {
                return Err(bad(
                    "the legacy 'function' role is not supported; use 'tool' messages",
                    format!("{param}.role"),
                ))
            }
            other => {
                return Err(bad(
                    format!("unknown role {other:?}"),
                    format!("{param}.role"),
                ))
            }
        }
        for added in messages.iter_mut().skip(before) {
            added.source.get_or_insert(i);
        }
    }
    let mut tools = Vec::new();
    for (i, t) in req.tools.iter().flatten().enumerate() {
        if let Some(d) = tool_def(t, i)? {
            tools.push(d);
        }
    }
    Ok(Conversation {
        system: system_parts.join("\n"),
        messages,
        tools,
        tool_choice: tool_choice(&req.tool_choice)?,
        instructions: response_format_instruction(&req.response_format)
            .into_iter()
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> ChatCompletionRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn converts_roles_tools_and_images() {
        let r = req(json!({"model": "m", "messages": [
            {"role": "system", "content": "sys"},
            {"role": "developer", "content": [{"type": "text", "text": "dev"}]},
            {"role": "user", "content": [{"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},
                      {"type": "web_search"}],
            "tool_choice": {"type": "function", "function": {"name": "f"}}}));
        let c = to_conversation(&r).unwrap();
        assert_eq!(c.system, "sys\ndev");
        assert_eq!(c.messages.len(), 3);
        assert_eq!(c.messages[0].images[0].format, "png");
        assert_eq!(c.messages[1].tool_calls[0].input, json!({"a": 1}));
        assert_eq!(c.messages[2].tool_results[0].text, "ok");
        assert_eq!(c.tools.len(), 1);
        assert_eq!(c.tool_choice, ToolChoice::Named("f".into()));
    }

    #[test]
    fn refuses_what_cannot_be_honoured() {
        let cases = [
            (json!({"model": "m", "messages": []}), "messages"),
            (
                json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]}),
                "n",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}),
                "messages[0].content[0].image_url.url",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
                {"id": "c", "function": {"name": "f", "arguments": "{oops"}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
                "messages[0].role",
            ),
        ];
        for (v, param) in cases {
            let e = to_conversation(&req(v)).unwrap_err();
            assert_eq!(e.status(), 400);
            assert_eq!(e.param(), Some(param));
        }
    }
}
