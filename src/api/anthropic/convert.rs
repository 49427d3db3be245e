//! Anthropic Messages request → [`Conversation`].
//!
//! Accepted: `system` as a string or text blocks (`cache_control` ignored; Claude Code's
//! `x-anthropic-billing-header` attribution block is dropped, it is not prompt text);
//! `messages` with string content or blocks — `text`, `image` (base64 png/jpeg/gif/webp),
//! `tool_use`, `tool_result` (string or block content, images lifted onto the turn, `is_error`
//! kept as status `error`), `document` with a text source (as text); replayed `thinking` /
//! `redacted_thinking` blocks and server-tool blocks (`server_tool_use`,
//! `web_search_tool_result`, …) are dropped; mid-conversation `role: "system"` entries are folded
//! into the user text. `tools` (`name`, `description`, `input_schema`; server tools such as
//! `web_search_20250305`, which Kiro cannot run, are dropped), `tool_choice` (`auto`, `any`,
//! `none`, `tool`). Refused with 400: missing `max_tokens` (as Anthropic does), `temperature` or
//! `top_p` outside 0..1, URL image sources and binary documents (the gateway fetches nothing on a
//! client's behalf and Kiro takes no PDFs). Knowingly ignored: `stop_sequences`, `temperature`,
//! `top_k`, `metadata`, `max_tokens` (Kiro has no such controls).

use serde_json::Value;

use super::types::MessagesRequest;
use crate::api::conversation::{
    image_from_data, Conversation, Message, Role, SignedReasoning, ToolCall, ToolChoice, ToolDef,
    ToolResultMsg,
};
use crate::error::GatewayError;

fn bad(msg: impl Into<String>) -> GatewayError {
    GatewayError::invalid_request(msg)
}

/// Text of `system`: a string or a list of text blocks.
fn system_text(v: &Option<Value>) -> Result<String, GatewayError> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(blocks)) => {
            let mut parts = Vec::new();
            for (i, b) in blocks.iter().enumerate() {
                let t = b.get("text").and_then(Value::as_str).ok_or_else(|| {
                    bad(format!(
                        "system.{i}: only text blocks are supported in system"
                    ))
                })?;
                if t.trim_start().starts_with("x-anthropic-billing-header:") {
                    continue;
                }
                parts.push(t);
            }
            Ok(parts.join("\n"))
        }
        Some(_) => Err(bad("system: must be a string or a list of text blocks")),
    }
}

fn image(block: &Value, at: &str) -> Result<crate::kiro::types::Image, GatewayError> {
    let src = block.get("source").unwrap_or(&Value::Null);
    match src.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let data = src.get("data").and_then(Value::as_str).unwrap_or_default();
            let media = src.get("media_type").and_then(Value::as_str);
            image_from_data(data, media)
                .map(|mut img| {
                    img.place = Some(at.to_owned());
                    img
                })
                .map_err(|e| bad(format!("{at}: {e}")))
        }
        Some("url") => Err(bad(format!(
            "{at}: URL image sources are not supported; send the image as base64"
        ))),
        other => Err(bad(format!(
            "{at}: unsupported image source type {other:?}"
        ))),
    }
}

/// A tool result's content: string, or blocks of text (joined by newlines) and images.
fn tool_result_content(
    content: Option<&Value>,
    at: &str,
    images: &mut Vec<crate::kiro::types::Image>,
) -> Result<String, GatewayError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::new();
            for (i, b) in blocks.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(
                        b.get("text")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    ),
                    Some("image") => images.push(image(b, &format!("{at}.content[{i}]"))?),
                    Some("document") => {
                        texts.push(document_text(b, &format!("{at}.content[{i}]"))?)
                    }
                    other => {
                        tracing::debug!(kind = ?other, "dropping a tool_result block the gateway cannot forward")
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        Some(other) => Ok(other.to_string()),
    }
}

fn document_text(block: &Value, at: &str) -> Result<String, GatewayError> {
    let src = block.get("source").unwrap_or(&Value::Null);
    match src.get("type").and_then(Value::as_str) {
        Some("text") => Ok(src.get("data").and_then(Value::as_str).unwrap_or_default().to_owned()),
        Some("content") => {
            let mut none = Vec::new();
            tool_result_content(src.get("content"), at, &mut none)
        }
        other => Err(bad(format!(
            "{at}: document source {other:?} is not supported (Kiro takes text, not files); send the text"
        ))),
    }
}

fn message(role: Role, content: &Value, at: &str) -> Result<Message, GatewayError> {
    let mut m = Message::new(role);
    let mut replayed: Vec<String> = Vec::new();
    match content {
        Value::String(s) => m.text = s.clone(),
        Value::Array(blocks) => {
            for (i, b) in blocks.iter().enumerate() {
                let bat = format!("{at}.content[{i}]");
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        m.push_text(b.get("text").and_then(Value::as_str).unwrap_or_default())
                    }
                    Some("image") => {
                        let img = image(b, &bat)?;
                        m.images.push(img);
                    }
                    Some("document") => {
                        let t = document_text(b, &bat)?;
                        m.push_text(&t);
                    }
                    Some("tool_use") => {
                        let id = b
                            .get("id")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad(format!("{bat}: id: Field required")))?;
                        let name = b
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad(format!("{bat}: name: Field required")))?;
                        m.tool_calls.push(ToolCall {
                            id: id.to_owned(),
                            name: name.to_owned(),
                            input: b
                                .get("input")
                                .cloned()
                                .unwrap_or_else(|| Value::Object(Default::default())),
                        });
                    }
                    Some("tool_result") => {
                        let id = b
                            .get("tool_use_id")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad(format!("{bat}: tool_use_id: Field required")))?;
                        let text = tool_result_content(b.get("content"), &bat, &mut m.images)?;
                        m.tool_results.push(ToolResultMsg {
                            id: id.to_owned(),
                            text,
                            is_error: b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
                        });
                    }
                    // the gateway's own thinking goes back as the assistant's earlier text;
                    // reasoning the service signed goes back as `reasoningContent` (when the
                    // request uses native reasoning)
                    Some("thinking") => {
                        let text = b
                            .get("thinking")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        let sig = b
                            .get("signature")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        if role == Role::Assistant
                            && crate::api::thinking::is_own_signature(text, sig)
                        {
                            replayed.push(format!("<thinking>{text}</thinking>"));
                        } else if role == Role::Assistant && !sig.is_empty() {
                            m.reasoning.push(SignedReasoning::Text {
                                text: text.to_owned(),
                                signature: sig.to_owned(),
                            });
                        }
                    }
                    Some("redacted_thinking") => {
                        if let (Role::Assistant, Some(data)) =
                            (role, b.get("data").and_then(Value::as_str))
                        {
                            m.reasoning.push(SignedReasoning::Redacted {
                                data: data.to_owned(),
                            });
                        }
                    }
                    // replayed reasoning and server-tool traffic carry nothing Kiro can take
                    Some(kind) => {
                        tracing::debug!(kind, "dropping a content block Kiro has no field for")
                    }
                    None => return Err(bad(format!("{bat}: type: Field required"))),
                }
            }
        }
        Value::Null => {}
        _ => {
            return Err(bad(format!(
                "{at}: content must be a string or a list of blocks"
            )))
        }
    }
    if !replayed.is_empty() {
        replayed.push(std::mem::take(&mut m.text));
        m.text = replayed.join("\n\n").trim_end().to_owned();
    }
    Ok(m)
}

fn tool_choice(v: &Option<Value>) -> Result<ToolChoice, GatewayError> {
    let Some(v) = v else {
        return Ok(ToolChoice::Auto);
    };
    Ok(match v.get("type").and_then(Value::as_str) {
        None | Some("auto") => ToolChoice::Auto,
        Some("any") => ToolChoice::Required,
        Some("none") => ToolChoice::None,
        Some("tool") => ToolChoice::Named(
            v.get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice.name: Field required"))?
                .to_owned(),
        ),
        Some(other) => {
            return Err(bad(format!(
                "tool_choice.type: {other:?} is not auto, any, none or tool"
            )))
        }
    })
}

/// Convert the request (see the module docs). `require_max_tokens` is false for
/// `count_tokens`, whose body has none.
pub fn to_conversation(
    req: &MessagesRequest,
    require_max_tokens: bool,
) -> Result<Conversation, GatewayError> {
    match req.max_tokens {
        None if require_max_tokens => {
            return Err(bad("max_tokens: Field required").with_param("max_tokens"))
        }
        Some(0) => return Err(bad("max_tokens: must be at least 1").with_param("max_tokens")),
        _ => {}
    }
    for (name, v) in [("temperature", req.temperature), ("top_p", req.top_p)] {
        if v.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
            return Err(bad(format!("{name}: must be between 0 and 1")).with_param(name));
        }
    }
    if req.messages.is_empty() {
        return Err(bad("messages: at least one message is required"));
    }
    let system = system_text(&req.system)?;
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let before = messages.len();
        match m.role.as_str() {
            "user" => messages.push(message(Role::User, &m.content, &at)?),
            "assistant" => messages.push(message(Role::Assistant, &m.content, &at)?),
            "system" => {
                // Claude Code's mid-conversation system messages: folded into the user's turn
                let inner = message(Role::User, &m.content, &at)?;
                if !inner.text.trim().is_empty() {
                    messages.push(Message::text(
                        Role::User,
                        format!("[System message]\n{}", inner.text),
                    ));
                }
            }
            other => {
                return Err(bad(format!(
                    "{at}: role {other:?} is not user or assistant"
                )))
            }
        }
        for added in messages.iter_mut().skip(before) {
            added.source.get_or_insert(i);
        }
    }
    let mut tools = Vec::new();
    for (i, t) in req.tools.iter().flatten().enumerate() {
        let kind = t.get("type").and_then(Value::as_str).unwrap_or("custom");
        if kind != "custom" {
            tracing::debug!(kind, "dropping a server tool Kiro cannot run");
            continue;
        }
        let name = t
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("tools.{i}.name: Field required")))?;
        tools.push(ToolDef {
            name: name.to_owned(),
            description: t
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            schema: t
                .get("input_schema")
                .cloned()
                .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
        });
    }
    Ok(Conversation {
        system,
        messages,
        tools,
        tool_choice: tool_choice(&req.tool_choice)?,
        instructions: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> MessagesRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn converts_blocks_tools_and_system() {
        let r = req(json!({"model": "m", "max_tokens": 10,
            "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=1;"},
                       {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
                       {"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "UklGRhoAAABXRUJQVlA4TA=="}}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": "t1", "name": "read", "input": {"p": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "is_error": true,
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"},
                                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="}}]}]},
                {"role": "system", "content": "remember the rules"}],
            "tools": [{"name": "read", "description": "Read", "input_schema": {"type": "object"}},
                      {"type": "web_search_20250305", "name": "web_search"}],
            "tool_choice": {"type": "any"}}));
        let c = to_conversation(&r, true).unwrap();
        assert_eq!(c.system, "You are Claude Code.\nBe brief.");
        assert_eq!(c.messages[0].images[0].format, "webp");
        assert_eq!(c.messages[1].text, "calling");
        assert_eq!(c.messages[1].tool_calls[0].input, json!({"p": 1}));
        let res = &c.messages[2].tool_results[0];
        assert_eq!((res.text.as_str(), res.is_error), ("a\nb", true));
        assert_eq!(c.messages[2].images.len(), 1);
        assert_eq!(c.messages[3].text, "[System message]\nremember the rules");
        assert_eq!(c.tools.len(), 1);
        assert_eq!(c.tool_choice, ToolChoice::Required);
    }

    #[test]
    fn refuses_what_anthropic_refuses() {
        let no_max = req(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}));
        let e = to_conversation(&no_max, true).unwrap_err();
        assert!(e.message().contains("max_tokens"));
        assert!(
            to_conversation(&no_max, false).is_ok(),
            "count_tokens has no max_tokens"
        );
        let hot = req(
            json!({"model": "m", "max_tokens": 1, "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]}),
        );
        assert!(to_conversation(&hot, true).is_err());
        let url = req(
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]}),
        );
        assert_eq!(
            to_conversation(&url, true).unwrap_err().message(),
            "messages[0].content[0]: URL image sources are not supported; send the image as base64"
        );
    }
}
