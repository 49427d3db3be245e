//! Responses request → [`Conversation`].
//!
//! - `instructions`, and `system` / `developer` messages, make the system prompt.
//! - Items: `message` (or any item with a `role`) with `input_text` / `output_text` / `text` /
//!   `refusal` parts and `input_image` data URLs; `function_call` and `custom_tool_call` (an
//!   assistant's tool call; the custom call's raw text becomes the one `input` argument);
//!   `function_call_output` / `custom_tool_call_output` (a user's tool result, string or parts).
//!   Consecutive calls and outputs merge into one assistant and one user turn, which is the
//!   pairing Kiro needs when clients replay parallel calls grouped. `reasoning` items are
//!   accepted and left out (Kiro has no field for them); any other item type is skipped with a
//!   debug log, never refused (Codex sends new ones).
//! - `previous_response_id`: the stored conversation of that response comes first.
//! - Tools: `function` (`parameters`); Codex's freeform `custom` tools (`apply_patch`) become a
//!   tool with one string argument `input` (their grammar goes into the description) and are
//!   mapped back as `custom_tool_call` items. A `namespace` tool (Codex's sub-agent tools,
//!   `{"type":"namespace","name":"multi_agent_v1","tools":[…]}`) is flattened: each inner tool
//!   goes to Kiro as `<namespace>__<name>` ([`flat_name`]), its calls come back with the inner
//!   `name` and the `namespace`, and a replayed `function_call` carrying `namespace` goes back
//!   under the flattened name. Other tool types (web search, local shell, …) are dropped with a
//!   debug log naming the type: Kiro cannot run them.
//! - `tool_choice`: `none`, `auto`, `required`, `{"type":"function","name":…}`.
//! - `text.format`: `json_schema` / `json_object` asked for in the system prompt.
//! - Knowingly ignored: `max_output_tokens`, `temperature`, `top_p`, `parallel_tool_calls`,
//!   `metadata`, `include`, `truncation`, `prompt_cache_key`, `service_tier`.

use serde_json::Value;

use super::{ResponseStore, ResponsesRequest};
use crate::api::conversation::{
    image_from_data, Conversation, Message, Role, ToolCall, ToolChoice, ToolDef, ToolResultMsg,
};
use crate::error::GatewayError;

/// A refusal naming its place (`input[0].content[1]: …`), with the full path as `param`.
fn bad(msg: impl Into<String>, param: impl Into<String>) -> GatewayError {
    crate::api::preflight::refusal(msg.into(), param)
}

/// The argument name a freeform (`custom`) tool's raw text travels in.
pub const CUSTOM_INPUT: &str = "input";

/// Separator between a namespace and the name of one of its tools in the name Kiro sees.
pub const NAMESPACE_SEPARATOR: &str = "__";

/// The name Kiro gets for tool `name` of namespace `ns`: `<ns>__<name>` when that obeys Kiro's
/// rule (1–64 of `[A-Za-z0-9_-]`); otherwise the other characters become `_` and the name is
/// cut to 55 characters plus `_` and 8 hex digits of a SHA-256 of the full name, so the same
/// tool always gets the same name and two long names stay apart.
pub fn flat_name(ns: &str, name: &str) -> String {
    let joined = format!("{ns}{NAMESPACE_SEPARATOR}{name}");
    if crate::api::conversation::valid_tool_name(&joined) {
        return joined;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(joined.as_bytes());
    let mut out: String = joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(55)
        .collect();
    out.push('_');
    for b in &digest[..4] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The request's tool names that need mapping back on the way out.
#[derive(Debug, Clone, Default)]
pub struct ToolNames {
    /// Kiro names of the `custom` tools (their calls go back as `custom_tool_call`).
    pub custom: Vec<String>,
    /// Kiro name of each namespaced tool → (namespace, the tool's own name).
    pub namespaced: std::collections::HashMap<String, (String, String)>,
}

impl ToolNames {
    pub fn of(req: &ResponsesRequest) -> ToolNames {
        let mut names = ToolNames::default();
        let kind = |t: &Value| {
            t.get("type")
                .and_then(Value::as_str)
                .unwrap_or("function")
                .to_owned()
        };
        let name = |t: &Value| t.get("name").and_then(Value::as_str).map(str::to_owned);
        for t in req.tools.iter().flatten() {
            match kind(t).as_str() {
                "custom" => names.custom.extend(name(t)),
                "namespace" => {
                    let Some(ns) = name(t) else { continue };
                    let inner = t.get("tools").and_then(Value::as_array);
                    for it in inner.into_iter().flatten() {
                        let Some(n) = name(it) else { continue };
                        let flat = flat_name(&ns, &n);
                        if kind(it) == "custom" {
                            names.custom.push(flat.clone());
                        }
                        names.namespaced.insert(flat, (ns.clone(), n));
                    }
                }
                _ => {}
            }
        }
        names
    }
}

fn text_of_parts(
    content: &Value,
    at: &str,
    images: Option<&mut Vec<crate::kiro::types::Image>>,
) -> Result<String, GatewayError> {
    let mut images = images;
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for (i, p) in parts.iter().enumerate() {
                let kind = p
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("input_text");
                let t =
                    match kind {
                        "input_text" | "output_text" | "text" | "summary_text" => p
                            .get("text")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        "refusal" => p
                            .get("refusal")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        "input_image" => {
                            let url = p
                                .get("image_url")
                                .and_then(|u| {
                                    u.as_str().or_else(|| u.get("url").and_then(Value::as_str))
                                })
                                .unwrap_or_default();
                            match images.as_deref_mut() {
                                Some(imgs) => {
                                    let mut img = image_from_data(url, None)
                                        .map_err(|e| bad(e, format!("{at}[{i}].image_url")))?;
                                    img.place = Some(format!("{at}[{i}]"));
                                    imgs.push(img);
                                }
                                None => return Err(bad(
                                    "images are only accepted in user messages and tool outputs",
                                    format!("{at}[{i}]"),
                                )),
                            }
                            String::new()
                        }
                        other => {
                            return Err(bad(
                                format!("content part type {other:?} is not supported"),
                                format!("{at}[{i}].type"),
                            ))
                        }
                    };
                if !out.is_empty() && !t.is_empty() {
                    out.push('\n');
                }
                out.push_str(&t);
            }
            Ok(out)
        }
        _ => Err(bad("content must be a string or a list of parts", at)),
    }
}

fn parse_arguments(args: &Value, at: &str) -> Result<Value, GatewayError> {
    match args {
        Value::String(s) if s.trim().is_empty() => Ok(Value::Object(Default::default())),
        Value::String(s) => serde_json::from_str(s)
            .map_err(|e| bad(format!("arguments are not valid JSON: {e}"), at)),
        Value::Object(_) => Ok(args.clone()),
        Value::Null => Ok(Value::Object(Default::default())),
        _ => Err(bad("arguments must be a JSON string", at)),
    }
}

fn str_field<'a>(item: &'a Value, name: &str, at: &str) -> Result<&'a str, GatewayError> {
    item.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{name} is required"), format!("{at}.{name}")))
}

/// The Kiro tools of one request tool (a namespace gives one per inner tool it can run).
fn tool_defs(t: &Value, at: &str, out: &mut Vec<ToolDef>) -> Result<(), GatewayError> {
    if t.get("type").and_then(Value::as_str) != Some("namespace") {
        out.extend(tool_def(t, at)?);
        return Ok(());
    }
    let ns = str_field(t, "name", at)?;
    let inner = t.get("tools").and_then(Value::as_array);
    for (j, it) in inner.into_iter().flatten().enumerate() {
        if let Some(mut d) = tool_def(it, &format!("{at}.tools[{j}]"))? {
            d.name = flat_name(ns, &d.name);
            out.push(d);
        }
    }
    Ok(())
}

fn tool_def(t: &Value, at: &str) -> Result<Option<ToolDef>, GatewayError> {
    match t.get("type").and_then(Value::as_str).unwrap_or("function") {
        "function" => {
            let name = str_field(t, "name", at)?.to_owned();
            Ok(Some(ToolDef {
                description: t
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                schema: t
                    .get("parameters")
                    .cloned()
                    .filter(|p| !p.is_null())
                    .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
                name,
            }))
        }
        "custom" => {
            let name = str_field(t, "name", at)?.to_owned();
            let mut description = t
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if let Some(f) = t.get("format").filter(|f| !f.is_null()) {
                let syntax = f.get("syntax").and_then(Value::as_str).unwrap_or("text");
                if let Some(def) = f.get("definition").and_then(Value::as_str) {
                    description.push_str(&format!(
                        "\n\nThe `{CUSTOM_INPUT}` argument is raw text (not JSON) in this {syntax} grammar:\n{def}"
                    ));
                }
            }
            Ok(Some(ToolDef {
                name,
                description,
                schema: serde_json::json!({"type": "object",
                    "properties": {CUSTOM_INPUT: {"type": "string", "description": "the raw freeform input"}},
                    "required": [CUSTOM_INPUT]}),
            }))
        }
        other => {
            tracing::debug!(
                kind = other,
                at,
                "dropping a Responses tool of a type Kiro cannot run"
            );
            Ok(None)
        }
    }
}

fn tool_choice(v: &Option<Value>) -> Result<ToolChoice, GatewayError> {
    Ok(match v {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => return Err(bad(format!("unknown tool_choice {other:?}"), "tool_choice")),
        },
        Some(o @ Value::Object(_)) => match o.get("name").and_then(Value::as_str) {
            Some(n) => match o.get("namespace").and_then(Value::as_str) {
                Some(ns) => ToolChoice::Named(flat_name(ns, n)),
                None => ToolChoice::Named(n.to_owned()),
            },
            None => ToolChoice::Required,
        },
        Some(_) => {
            return Err(bad(
                "tool_choice must be a string or an object",
                "tool_choice",
            ))
        }
    })
}

fn format_instruction(text: &Option<Value>) -> Option<String> {
    let f = text.as_ref()?.get("format")?;
    match f.get("type").and_then(Value::as_str)? {
        "json_object" => Some("Answer with a single valid JSON object and nothing else.".into()),
        "json_schema" => {
            let schema = f
                .get("schema")
                .map(Value::to_string)
                .unwrap_or_else(|| "{}".into());
            Some(format!(
                "Answer with a single JSON value that validates against this JSON schema, and nothing else (no prose, no code fences):\n{schema}"
            ))
        }
        _ => None,
    }
}

/// The stored conversation of `previous_response_id`, or a 404 in OpenAI's shape.
pub fn previous_items(req: &ResponsesRequest) -> Result<Vec<Value>, GatewayError> {
    let Some(id) = req
        .previous_response_id
        .as_deref()
        .filter(|s| !s.is_empty())
    else {
        return Ok(Vec::new());
    };
    req.store_handle
        .as_ref()
        .and_then(|s| s.get(id))
        .map(|s| s.items.as_ref().clone())
        .ok_or_else(|| {
            GatewayError::not_found(format!(
                "Previous response with id '{id}' not found (responses are kept in memory, for a limited time, and only when `store` is not false)"
            ))
            .with_param("previous_response_id")
            .with_code("previous_response_not_found")
        })
}

/// Convert the request (see the module docs).
pub fn to_conversation(req: &ResponsesRequest) -> Result<Conversation, GatewayError> {
    let mut items = previous_items(req)?;
    // the client numbers its own `input` only; the chained response's items come first
    let chained = items.len();
    items.extend(req.input_items()?);
    let mut system_parts: Vec<String> = req
        .instructions
        .iter()
        .filter(|s| !s.trim().is_empty())
        .cloned()
        .collect();
    let mut messages: Vec<Message> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let own = i.checked_sub(chained);
        let at = match own {
            Some(k) => format!("input[{k}]"),
            None => format!("previous_response_id (its item {i})"),
        };
        let kind =
            item.get("type")
                .and_then(Value::as_str)
                .unwrap_or(if item.get("role").is_some() {
                    "message"
                } else {
                    ""
                });
        let before = messages.len();
        match kind {
            "message" => {
                let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
                let content = item.get("content").unwrap_or(&Value::Null);
                match role {
                    "system" | "developer" => {
                        let t = text_of_parts(content, &format!("{at}.content"), None)?;
                        if !t.trim().is_empty() {
                            system_parts.push(t);
                        }
                    }
                    "assistant" => {
                        let mut m = Message::new(Role::Assistant);
                        m.text = text_of_parts(content, &format!("{at}.content"), None)?;
                        messages.push(m);
                    }
                    "user" => {
                        let mut m = Message::new(Role::User);
                        m.text =
                            text_of_parts(content, &format!("{at}.content"), Some(&mut m.images))?;
                        messages.push(m);
                    }
                    other => {
                        return Err(bad(
                            format!("role {other:?} is not user, assistant, system or developer"),
                            format!("{at}.role"),
                        ))
                    }
                }
            }
            "function_call" | "custom_tool_call" => {
                let call_id = str_field(item, "call_id", &at)?.to_owned();
                let mut name = str_field(item, "name", &at)?.to_owned();
                // a call of a namespaced tool: Kiro knows it by the flattened name
                if let Some(ns) = item
                    .get("namespace")
                    .and_then(Value::as_str)
                    .filter(|ns| !ns.is_empty())
                {
                    name = flat_name(ns, &name);
                }
                let input = if kind == "custom_tool_call" {
                    let raw = item
                        .get("input")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    serde_json::json!({ CUSTOM_INPUT: raw })
                } else {
                    parse_arguments(
                        item.get("arguments").unwrap_or(&Value::Null),
                        &format!("{at}.arguments"),
                    )?
                };
                let mut m = Message::new(Role::Assistant);
                m.tool_calls.push(ToolCall {
                    id: call_id,
                    name,
                    input,
                });
                messages.push(m);
            }
            "function_call_output" | "custom_tool_call_output" => {
                let call_id = str_field(item, "call_id", &at)?.to_owned();
                let mut m = Message::new(Role::User);
                let text = text_of_parts(
                    item.get("output").unwrap_or(&Value::Null),
                    &format!("{at}.output"),
                    Some(&mut m.images),
                )?;
                m.tool_results.push(ToolResultMsg {
                    id: call_id,
                    text,
                    is_error: false,
                });
                messages.push(m);
            }
            "reasoning" => {}
            other => tracing::debug!(
                kind = other,
                "skipping a Responses input item Kiro has no field for"
            ),
        }
        for added in messages.iter_mut().skip(before) {
            if let Some(k) = own {
                added.source.get_or_insert(k);
            }
        }
    }
    if messages.is_empty() {
        return Err(bad("input must hold at least one message", "input"));
    }
    let mut tools = Vec::new();
    for (i, t) in req.tools.iter().flatten().enumerate() {
        tool_defs(t, &format!("tools[{i}]"), &mut tools)?;
    }
    Ok(Conversation {
        system: system_parts.join("\n\n"),
        messages,
        tools,
        tool_choice: tool_choice(&req.tool_choice)?,
        instructions: format_instruction(&req.text).into_iter().collect(),
    })
}
