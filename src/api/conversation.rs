//! The dialect-neutral conversation both public dialects are converted to, and its conversion
//! into a Kiro request that obeys the service's rules (spec 3.2–3.4):
//!
//! 1. tool definitions are checked (name ≤ 64 of `[A-Za-z0-9_-]`), empty descriptions filled,
//!    over-long ones moved into the system prompt, schemas cleaned of what the service rejects;
//! 2. without tools (or with `tool_choice: none`), tool calls and results become text;
//! 3. tool calls are paired with the results of the next user turn by id: an unanswered call or
//!    an orphaned result is rendered as text instead of being sent in a form the service
//!    rejects;
//! 4. adjacent messages of the same role are merged (text, images, calls and results all kept);
//! 5. the history starts with a user turn and alternates; the system prompt is prefixed to the
//!    first user turn; empty contents get placeholders; a trailing assistant turn goes to the
//!    history and the current message becomes `Continue`;
//! 6. tools used in the history but no longer defined get a minimal definition.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::error::GatewayError;
use crate::kiro::types::{
    AssistantResponseMessage, ConversationState, CurrentMessage, GenerateAssistantRequest,
    HistoryMessage, Image, InputSchema, Tool, ToolResultContent, ToolSpecification, ToolUse,
    UserInputMessage, UserInputMessageContext,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub text: String,
    pub images: Vec<Image>,
    pub tool_calls: Vec<ToolCall>,
    pub tool_results: Vec<ToolResultMsg>,
    /// Reasoning the service signed, sent back by the client (assistant turns only).
    pub reasoning: Vec<SignedReasoning>,
    /// Index of the client's message this one came from (for error messages).
    pub source: Option<usize>,
}

/// A reasoning block the service produced and signed, as a client sends it back.
#[derive(Debug, Clone, PartialEq)]
pub enum SignedReasoning {
    Text { text: String, signature: String },
    Redacted { data: String },
}

impl SignedReasoning {
    /// The `reasoningContent` member of an assistant history turn.
    pub fn to_kiro(&self) -> serde_json::Value {
        match self {
            SignedReasoning::Text { text, signature } => {
                serde_json::json!({"reasoningText": {"text": text, "signature": signature}})
            }
            SignedReasoning::Redacted { data } => serde_json::json!({"redactedContent": data}),
        }
    }
}

impl Message {
    pub fn new(role: Role) -> Self {
        Message {
            role,
            text: String::new(),
            images: Vec::new(),
            tool_calls: Vec::new(),
            tool_results: Vec::new(),
            reasoning: Vec::new(),
            source: None,
        }
    }

    pub fn text(role: Role, text: impl Into<String>) -> Self {
        let mut m = Self::new(role);
        m.text = text.into();
        m
    }

    /// Append text, separating it from what is there by a newline.
    pub fn push_text(&mut self, t: &str) {
        if t.is_empty() {
            return;
        }
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        self.text.push_str(t);
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// A JSON object.
    pub input: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolResultMsg {
    pub id: String,
    pub text: String,
    pub is_error: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: String,
    pub schema: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    #[default]
    Auto,
    None,
    /// The model must call some tool.
    Required,
    /// The model must call this tool.
    Named(String),
}

/// A conversation in dialect-neutral form.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Conversation {
    pub system: String,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolDef>,
    pub tool_choice: ToolChoice,
    /// Extra instructions appended to the system prompt (structured-output requests, say).
    pub instructions: Vec<String>,
}

/// What the conversion needs besides the conversation.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub model_id: String,
    /// `origin` of every `userInputMessage` (the protocol's; empty: `AI_EDITOR`).
    pub origin: String,
    pub profile_arn: Option<String>,
    pub conversation_id: String,
    /// Descriptions longer than this move to the system prompt (`0`: never).
    pub tool_description_max: usize,
    /// Send signed reasoning from history as `reasoningContent` (native reasoning in use);
    /// otherwise it is left out.
    pub send_reasoning: bool,
    /// `additionalModelRequestFields` for native reasoning.
    pub additional_fields: Option<serde_json::Value>,
}

pub use super::preflight::valid_tool_name;

/// Keys the service's schema validator rejects or that carry no meaning for it.
const DROPPED_SCHEMA_KEYS: &[&str] = &[
    "additionalProperties",
    "$schema",
    "additionalItems",
    "unevaluatedProperties",
    "unevaluatedItems",
    "$vocabulary",
    "discriminator",
    "xml",
    "externalDocs",
];

/// Clean a JSON schema of what the service rejects (spec 3.4), recursively. Property names
/// inside `properties` are kept whatever they are called.
pub fn sanitize_schema(schema: &Value) -> Value {
    fn clean(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut out = Map::with_capacity(m.len());
                for (k, val) in m {
                    if DROPPED_SCHEMA_KEYS.contains(&k.as_str()) || k.starts_with("x-") {
                        continue;
                    }
                    if k == "required" && val.as_array().is_some_and(|a| a.is_empty()) {
                        continue;
                    }
                    if k == "properties" || k == "$defs" || k == "definitions" {
                        if let Value::Object(props) = val {
                            let cleaned: Map<String, Value> = props
                                .iter()
                                .map(|(pk, pv)| (pk.clone(), clean(pv)))
                                .collect();
                            out.insert(k.clone(), Value::Object(cleaned));
                            continue;
                        }
                    }
                    out.insert(k.clone(), clean(val));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(clean).collect()),
            other => other.clone(),
        }
    }
    let mut root = match clean(schema) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    root.entry("type")
        .or_insert_with(|| Value::String("object".into()));
    if root.get("type") == Some(&Value::String("object".into())) {
        root.entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
    }
    Value::Object(root)
}

fn call_as_text(c: &ToolCall) -> String {
    format!("[Tool: {} ({})]\n{}", c.name, c.id, c.input)
}

fn result_as_text(r: &ToolResultMsg) -> String {
    let status = if r.is_error { " error" } else { "" };
    format!("[Tool Result{status} ({})]\n{}", r.id, r.text)
}

fn calls_to_text(m: &mut Message, calls: Vec<ToolCall>) {
    for c in calls {
        let t = call_as_text(&c);
        if m.text.is_empty() {
            m.text = t;
        } else {
            m.text.push_str("\n\n");
            m.text.push_str(&t);
        }
    }
}

fn results_to_text(m: &mut Message, results: Vec<ToolResultMsg>) {
    let mut parts: Vec<String> = results.iter().map(result_as_text).collect();
    if !m.text.is_empty() {
        parts.push(std::mem::take(&mut m.text));
    }
    m.text = parts.join("\n\n");
}

fn merge_adjacent(messages: Vec<Message>) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len());
    for m in messages {
        match out.last_mut() {
            Some(prev) if prev.role == m.role => {
                prev.push_text(&m.text);
                prev.images.extend(m.images);
                prev.tool_calls.extend(m.tool_calls);
                prev.tool_results.extend(m.tool_results);
                prev.reasoning.extend(m.reasoning);
                prev.source = prev.source.or(m.source);
            }
            _ => out.push(m),
        }
    }
    out
}

/// Pair each assistant turn's calls with the next user turn's results; render the unpaired
/// ones as text. One pass over the turns, each id looked up in a set: linear in the number
/// of calls and results (a request may carry a hundred thousand of them).
fn pair_tool_calls(messages: &mut [Message]) {
    for i in 0..messages.len() {
        let (before, rest) = messages.split_at_mut(i);
        let Some((m, after)) = rest.split_first_mut() else {
            break;
        };
        if m.role == Role::User {
            // results not answering the preceding assistant turn
            let prev_ids: HashSet<&str> = match before.last() {
                Some(p) if p.role == Role::Assistant => {
                    p.tool_calls.iter().map(|c| c.id.as_str()).collect()
                }
                _ => HashSet::new(),
            };
            let results = std::mem::take(&mut m.tool_results);
            let mut seen = HashSet::with_capacity(results.len());
            let (kept, orphans): (Vec<_>, Vec<_>) = results
                .into_iter()
                .partition(|r| prev_ids.contains(r.id.as_str()) && seen.insert(r.id.clone()));
            m.tool_results = kept;
            if !orphans.is_empty() {
                tracing::debug!(
                    count = orphans.len(),
                    "tool results without a matching call sent as text"
                );
                results_to_text(m, orphans);
            }
        } else {
            let answered: HashSet<&str> = after
                .first()
                .map(|n| n.tool_results.iter().map(|r| r.id.as_str()).collect())
                .unwrap_or_default();
            // (a trailing assistant turn's calls are answered by nobody: text as well)
            let calls = std::mem::take(&mut m.tool_calls);
            let (kept, unanswered): (Vec<_>, Vec<_>) = calls
                .into_iter()
                .partition(|c| answered.contains(c.id.as_str()));
            m.tool_calls = kept;
            if !unanswered.is_empty() {
                tracing::debug!(
                    count = unanswered.len(),
                    "tool calls without a result sent as text"
                );
                calls_to_text(m, unanswered);
            }
        }
    }
}

fn kiro_results(results: &[ToolResultMsg]) -> Vec<crate::kiro::types::ToolResult> {
    results
        .iter()
        .map(|r| crate::kiro::types::ToolResult {
            tool_use_id: r.id.clone(),
            content: vec![ToolResultContent {
                text: if r.text.is_empty() {
                    "(empty result)".into()
                } else {
                    r.text.clone()
                },
            }],
            status: if r.is_error { "error" } else { "success" }.into(),
        })
        .collect()
}

fn kiro_uses(calls: &[ToolCall]) -> Vec<ToolUse> {
    calls
        .iter()
        .map(|c| ToolUse {
            tool_use_id: c.id.clone(),
            name: c.name.clone(),
            input: if c.input.is_object() {
                c.input.clone()
            } else {
                serde_json::json!({ "value": c.input })
            },
        })
        .collect()
}

/// Convert a conversation into the Kiro request (see the module docs).
pub fn to_kiro(
    conv: Conversation,
    opts: &BuildOptions,
) -> Result<GenerateAssistantRequest, GatewayError> {
    to_kiro_traced(conv, opts).map(|(req, _)| req)
}

/// [`to_kiro`], also giving for each history entry and then the current message the index of
/// the client message it came from (`None` for turns the gateway added).
pub fn to_kiro_traced(
    conv: Conversation,
    opts: &BuildOptions,
) -> Result<(GenerateAssistantRequest, Vec<Option<usize>>), GatewayError> {
    let Conversation {
        system,
        mut messages,
        tools,
        tool_choice,
        instructions,
    } = conv;
    let mut system = system.trim().to_owned();

    // 1. tools
    let tools_off = tool_choice == ToolChoice::None || tools.is_empty();
    let mut kiro_tools = Vec::new();
    let mut moved_docs = Vec::new();
    if !tools_off {
        for (i, t) in tools.iter().enumerate() {
            if !valid_tool_name(&t.name) {
                return Err(crate::api::preflight::Violation {
                    message: None,
                    part: None,
                    field: format!("tools[{i}].name"),
                    rule: "tool_name",
                    detail: format!(
                        "tool name {:?} must be 1-64 characters of letters, digits, '_' and '-'",
                        t.name
                    ),
                }
                .into_error());
            }
            if !t.schema.is_object() {
                return Err(GatewayError::invalid_request(format!(
                    "the input schema of tool {:?} must be a JSON object",
                    t.name
                ))
                .with_param(format!("tools[{i}]")));
            }
            let mut description = t.description.trim().to_owned();
            if description.is_empty() {
                description = format!("Tool: {}", t.name);
            }
            if opts.tool_description_max > 0
                && description.chars().count() > opts.tool_description_max
            {
                moved_docs.push(format!("## Tool: {}\n\n{}", t.name, description));
                description = format!(
                    "[Full documentation in system prompt under '## Tool: {}']",
                    t.name
                );
            }
            kiro_tools.push(Tool {
                tool_specification: ToolSpecification {
                    name: t.name.clone(),
                    description,
                    input_schema: InputSchema {
                        json: sanitize_schema(&t.schema),
                    },
                },
            });
        }
    }
    match &tool_choice {
        ToolChoice::Required if !tools_off => {
            system.push_str("\n\nYou must answer by calling one of the available tools.")
        }
        ToolChoice::Named(n) if !tools_off => {
            system.push_str(&format!("\n\nYou must answer by calling the tool `{n}`."))
        }
        _ => {}
    }
    if !moved_docs.is_empty() {
        system.push_str("\n\n---\n# Tool Documentation\n\n");
        system.push_str(&moved_docs.join("\n\n"));
    }
    for extra in instructions {
        system.push_str("\n\n");
        system.push_str(&extra);
    }
    let system = system.trim().to_owned();

    // 2. tool content without tools becomes text
    if tools_off {
        for m in &mut messages {
            let calls = std::mem::take(&mut m.tool_calls);
            calls_to_text(m, calls);
            let results = std::mem::take(&mut m.tool_results);
            if !results.is_empty() {
                results_to_text(m, results);
            }
        }
    }

    // 3-4. merge, then pair calls with results
    let mut messages = merge_adjacent(messages);
    pair_tool_calls(&mut messages);

    // 5. start with a user turn
    if messages.first().is_none_or(|m| m.role != Role::User) {
        messages.insert(0, Message::text(Role::User, "(empty)"));
    }
    // a trailing assistant turn joins the history; the current message is "Continue"
    let mut current = match messages.last() {
        Some(m) if m.role == Role::User => {
            messages.pop().unwrap_or_else(|| Message::new(Role::User))
        }
        _ => Message::text(Role::User, "Continue"),
    };
    if !system.is_empty() {
        let target = messages.first_mut().unwrap_or(&mut current);
        target.text = if target.text.is_empty() {
            system.clone()
        } else {
            format!("{system}\n\n{}", target.text)
        };
    }

    // 6. tools used in history must be defined
    if !tools_off {
        // names compared case-insensitively, as the service does; a set keeps this linear
        let mut defined: HashSet<String> = kiro_tools
            .iter()
            .map(|t| t.tool_specification.name.to_ascii_lowercase())
            .collect();
        for m in &messages {
            for c in &m.tool_calls {
                if defined.insert(c.name.to_ascii_lowercase()) {
                    kiro_tools.push(Tool {
                        tool_specification: ToolSpecification {
                            name: c.name.clone(),
                            description: format!(
                                "Tool: {} (used earlier in this conversation)",
                                c.name
                            ),
                            input_schema: InputSchema {
                                json: serde_json::json!({"type": "object", "properties": {}}),
                            },
                        },
                    });
                }
            }
        }
    }

    let mut sources: Vec<Option<usize>> = messages.iter().map(|m| m.source).collect();
    sources.push(current.source);
    let model_id = &opts.model_id;
    let origin = if opts.origin.is_empty() {
        "AI_EDITOR"
    } else {
        opts.origin.as_str()
    };
    let history: Vec<HistoryMessage> = messages
        .into_iter()
        .map(|m| match m.role {
            Role::User => HistoryMessage::UserInputMessage(UserInputMessage {
                content: if m.text.is_empty() {
                    "(empty)".into()
                } else {
                    m.text
                },
                model_id: model_id.clone(),
                origin: origin.to_owned(),
                images: m.images,
                user_input_message_context: (!m.tool_results.is_empty()).then(|| {
                    UserInputMessageContext {
                        tools: Vec::new(),
                        tool_results: kiro_results(&m.tool_results),
                    }
                }),
            }),
            Role::Assistant => HistoryMessage::AssistantResponseMessage(AssistantResponseMessage {
                content: if m.text.is_empty() {
                    "(empty)".into()
                } else {
                    m.text
                },
                tool_uses: kiro_uses(&m.tool_calls),
                // the service takes one reasoning member per turn: the first block (a turn
                // holds one in practice)
                reasoning_content: if opts.send_reasoning {
                    m.reasoning.first().map(SignedReasoning::to_kiro)
                } else {
                    None
                },
            }),
        })
        .collect();

    let context = UserInputMessageContext {
        tools: kiro_tools,
        tool_results: kiro_results(&current.tool_results),
    };
    let current_msg = UserInputMessage {
        content: if current.text.trim().is_empty() {
            "Continue".into()
        } else {
            std::mem::take(&mut current.text)
        },
        model_id: model_id.clone(),
        origin: origin.to_owned(),
        images: current.images,
        user_input_message_context: (!context.is_empty()).then_some(context),
    };
    let req = GenerateAssistantRequest {
        conversation_state: ConversationState {
            conversation_id: opts.conversation_id.clone(),
            chat_trigger_type: "MANUAL".into(),
            current_message: CurrentMessage {
                user_input_message: current_msg,
            },
            history,
        },
        profile_arn: opts.profile_arn.clone(),
        additional_model_request_fields: opts.additional_fields.clone(),
    };
    Ok((req, sources))
}

/// Where each turn after the first starts: the user messages that are not tool-result turns,
/// past the first message and before the last. Dropping the messages before the `k`-th of
/// them drops the `k` oldest turns whole, so a tool call never loses its result nor a result
/// its call, and the last message always stays.
pub fn turn_starts(conv: &Conversation) -> Vec<usize> {
    let n = conv.messages.len();
    (1..n.saturating_sub(1))
        .filter(|&j| {
            let m = &conv.messages[j];
            m.role == Role::User && m.tool_results.is_empty()
        })
        .collect()
}

/// Drop the oldest turn of a conversation whole (see [`turn_starts`]). Returns how many
/// messages were dropped (0: nothing left to drop).
pub fn drop_oldest_turn(conv: &mut Conversation) -> usize {
    match turn_starts(conv).first() {
        Some(&j) => {
            conv.messages.drain(..j);
            j
        }
        None => 0,
    }
}

/// Bytes of a message that reach the Kiro request whatever the conversion does with it: its
/// trimmed text, images, tool call ids and names, tool result ids and texts (each appears at
/// least once in the JSON, escaping only makes it longer). Tool inputs and signed reasoning
/// are not counted.
pub fn message_floor(m: &Message) -> usize {
    m.text.trim().len()
        + m.images.iter().map(|i| i.source.bytes.len()).sum::<usize>()
        + m.tool_calls
            .iter()
            .map(|c| c.id.len() + c.name.len())
            .sum::<usize>()
        + m.tool_results
            .iter()
            .map(|r| r.id.len() + r.text.trim().len())
            .sum::<usize>()
}

/// A lower bound of the serialised Kiro request for `conv`: the system prompt, the extra
/// instructions and every message's [`message_floor`]. Cheap (no copy), so a request far over
/// the payload limit is refused before the translated request is built.
pub fn payload_floor(conv: &Conversation) -> usize {
    conv.system.trim().len()
        + conv
            .instructions
            .iter()
            .map(|i| i.trim().len())
            .sum::<usize>()
        + conv.messages.iter().map(message_floor).sum::<usize>()
}

/// Parse a `data:` URL or bare base64 into a Kiro image. The format comes from the image's
/// own bytes (a mismatch with the declared type, `media_type` or the data URL's, is logged
/// at debug): Kiro refuses an image whose bytes are not its declared format with an opaque
/// 400. Bytes of no format Kiro takes are refused here.
pub fn image_from_data(data: &str, media_type: Option<&str>) -> Result<Image, String> {
    let (mt, b64) = if let Some(rest) = data.strip_prefix("data:") {
        let (meta, payload) = rest
            .split_once(',')
            .ok_or_else(|| "malformed data URL (no comma)".to_owned())?;
        if !meta.ends_with(";base64") {
            return Err("only base64 data URLs are supported".into());
        }
        (Some(meta.trim_end_matches(";base64")), payload)
    } else {
        (None, data)
    };
    let media = media_type
        .or(mt)
        .unwrap_or("image/jpeg")
        .to_ascii_lowercase();
    let sub = media.strip_prefix("image/").unwrap_or(&media);
    let declared = match sub {
        "png" => Some("png"),
        "jpeg" | "jpg" => Some("jpeg"),
        "gif" => Some("gif"),
        "webp" => Some("webp"),
        _ => None,
    };
    let b64: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    use base64::Engine;
    let bytes = match base64::engine::general_purpose::STANDARD.decode(&b64) {
        Ok(b) if !b.is_empty() => b,
        _ => return Err("image data is not valid base64".into()),
    };
    let format = match (crate::kiro::types::sniff_image_format(&bytes), declared) {
        (Some(real), Some(said)) if real != said => {
            tracing::debug!(
                declared = %media,
                actual = real,
                "image bytes are not their declared type; sending the actual format"
            );
            real
        }
        (Some(real), None) => {
            tracing::debug!(
                declared = %media,
                actual = real,
                "image of an unsupported declared type holds a supported format; sending that"
            );
            real
        }
        (Some(real), Some(_)) => real,
        (None, None) => {
            return Err(format!(
                "image type {sub:?} is not supported by Kiro (png, jpeg, gif, webp)"
            ))
        }
        (None, Some(_)) => {
            return Err(format!(
                "image data is not a PNG, JPEG, GIF or WebP image (declared {media})"
            ))
        }
    };
    Ok(Image {
        format: format.into(),
        source: crate::kiro::types::ImageSource { bytes: b64 },
        place: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts() -> BuildOptions {
        BuildOptions {
            model_id: "claude-sonnet-4.5".into(),
            origin: String::new(),
            profile_arn: None,
            conversation_id: "c".into(),
            tool_description_max: 10_000,
            ..Default::default()
        }
    }

    fn weather() -> ToolDef {
        ToolDef {
            name: "get_weather".into(),
            description: "Current weather".into(),
            schema: json!({"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"], "additionalProperties": false}),
        }
    }

    fn validate(req: &GenerateAssistantRequest) {
        let body = serde_json::to_vec(req).unwrap();
        crate::mock::validate::validate(&body, &[]).unwrap();
    }

    #[test]
    fn builds_the_annotated_example() {
        let mut assistant = Message::new(Role::Assistant);
        assistant.tool_calls.push(ToolCall {
            id: "tooluse_abc123".into(),
            name: "get_weather".into(),
            input: json!({"city": "Lyon"}),
        });
        let mut tool = Message::new(Role::User);
        tool.tool_results.push(ToolResultMsg {
            id: "tooluse_abc123".into(),
            text: "18 C, cloudy".into(),
            is_error: false,
        });
        let conv = Conversation {
            system: "You are terse.".into(),
            messages: vec![
                Message::text(Role::User, "What is the weather in Lyon?"),
                assistant,
                tool,
            ],
            tools: vec![weather()],
            ..Default::default()
        };
        let req = to_kiro(conv, &opts()).unwrap();
        validate(&req);
        let v = serde_json::to_value(&req).unwrap();
        let cs = &v["conversationState"];
        assert_eq!(
            cs["history"][0]["userInputMessage"]["content"],
            "You are terse.\n\nWhat is the weather in Lyon?"
        );
        assert_eq!(
            cs["history"][1]["assistantResponseMessage"]["content"],
            "(empty)"
        );
        assert_eq!(
            cs["history"][1]["assistantResponseMessage"]["toolUses"][0]["input"],
            json!({"city": "Lyon"})
        );
        let cur = &cs["currentMessage"]["userInputMessage"];
        assert_eq!(cur["content"], "Continue");
        assert_eq!(
            cur["userInputMessageContext"]["toolResults"][0]["toolUseId"],
            "tooluse_abc123"
        );
        let schema =
            &cur["userInputMessageContext"]["tools"][0]["toolSpecification"]["inputSchema"]["json"];
        assert!(schema.get("additionalProperties").is_none());
        assert_eq!(schema["required"], json!(["city"]));
    }

    #[test]
    fn merges_same_role_turns_keeping_images() {
        let img = |b: &str| Image {
            format: "png".into(),
            source: crate::kiro::types::ImageSource { bytes: b.into() },
            place: None,
        };
        let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
        let mut a = Message::text(Role::User, "one");
        a.images.push(img(png));
        let mut b = Message::text(Role::User, "two");
        b.images.push(img(png));
        let req = to_kiro(
            Conversation {
                messages: vec![a, b],
                ..Default::default()
            },
            &opts(),
        )
        .unwrap();
        validate(&req);
        let cur = &req.conversation_state.current_message.user_input_message;
        assert_eq!(cur.content, "one\ntwo");
        assert_eq!(cur.images.len(), 2);
    }

    #[test]
    fn unpaired_calls_and_results_become_text() {
        let mut assistant = Message::text(Role::Assistant, "let me look");
        assistant.tool_calls.push(ToolCall {
            id: "t1".into(),
            name: "get_weather".into(),
            input: json!({"city": "Paris"}),
        });
        let mut user = Message::text(Role::User, "never mind");
        user.tool_results.push(ToolResultMsg {
            id: "other".into(),
            text: "x".into(),
            is_error: true,
        });
        let req = to_kiro(
            Conversation {
                messages: vec![Message::text(Role::User, "hi"), assistant, user],
                tools: vec![weather()],
                ..Default::default()
            },
            &opts(),
        )
        .unwrap();
        validate(&req);
        let HistoryMessage::AssistantResponseMessage(a) = &req.conversation_state.history[1] else {
            panic!()
        };
        assert!(a.tool_uses.is_empty());
        assert!(a
            .content
            .contains("[Tool: get_weather (t1)]\n{\"city\":\"Paris\"}"));
        let cur = &req.conversation_state.current_message.user_input_message;
        assert!(cur.content.starts_with("[Tool Result error (other)]\nx"));
    }

    #[test]
    fn without_tools_everything_is_text_and_trailing_assistant_continues() {
        let mut assistant = Message::text(Role::Assistant, "");
        assistant.tool_calls.push(ToolCall {
            id: "t1".into(),
            name: "f".into(),
            input: json!({}),
        });
        let req = to_kiro(
            Conversation {
                messages: vec![Message::text(Role::User, "hi"), assistant],
                ..Default::default()
            },
            &opts(),
        )
        .unwrap();
        validate(&req);
        assert_eq!(req.conversation_state.history.len(), 2);
        assert_eq!(
            req.conversation_state
                .current_message
                .user_input_message
                .content,
            "Continue"
        );
    }

    #[test]
    fn rejects_bad_tool_names_and_moves_long_descriptions() {
        let mut t = weather();
        t.name = "bad name!".into();
        let err = to_kiro(
            Conversation {
                messages: vec![Message::text(Role::User, "hi")],
                tools: vec![t],
                ..Default::default()
            },
            &opts(),
        )
        .unwrap_err();
        assert_eq!(err.param(), Some("tools[0].name"));
        let mut long = weather();
        long.description = "d".repeat(20);
        let mut o = opts();
        o.tool_description_max = 10;
        let req = to_kiro(
            Conversation {
                messages: vec![Message::text(Role::User, "hi")],
                tools: vec![long],
                ..Default::default()
            },
            &o,
        )
        .unwrap();
        let cur = &req.conversation_state.current_message.user_input_message;
        assert!(cur.content.contains("## Tool: get_weather"));
        let ctx = cur.user_input_message_context.as_ref().unwrap();
        assert!(ctx.tools[0]
            .tool_specification
            .description
            .starts_with("[Full documentation"));
    }

    #[test]
    fn sanitizes_schemas_but_keeps_property_names() {
        let s = sanitize_schema(&json!({"$schema": "x", "properties": {
            "additionalProperties": {"type": "string", "x-foo": 1},
            "nested": {"type": "object", "required": [], "additionalProperties": true}}}));
        assert_eq!(
            s,
            json!({"type": "object", "properties": {
            "additionalProperties": {"type": "string"},
            "nested": {"type": "object"}}})
        );
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    const JPEG: &[u8] = &[0xff, 0xd8, 0xff, 0xe0, 0, 0x10, b'J', b'F', b'I', b'F'];

    #[test]
    fn parses_images() {
        let jpeg = b64(JPEG);
        let i = image_from_data(&format!("data:image/jpg;base64,{jpeg}"), None).unwrap();
        assert_eq!(
            (i.format.as_str(), i.source.bytes.as_str()),
            ("jpeg", jpeg.as_str())
        );
        assert_eq!(
            image_from_data(
                &format!("data:image/tiff;base64,{}", b64(b"II*\0tiff")),
                None
            )
            .unwrap_err(),
            "image type \"tiff\" is not supported by Kiro (png, jpeg, gif, webp)"
        );
        assert_eq!(
            image_from_data("data:image/png;base64,@@@", None).unwrap_err(),
            "image data is not valid base64"
        );
    }

    #[test]
    fn the_image_format_comes_from_its_bytes() {
        // a JPEG declared as PNG (and the reverse) goes to Kiro as what it is
        let i = image_from_data(&format!("data:image/png;base64,{}", b64(JPEG)), None).unwrap();
        assert_eq!(i.format, "jpeg");
        let i = image_from_data(&b64(PNG), Some("image/jpeg")).unwrap();
        assert_eq!(i.format, "png");
        let gif = b64(b"GIF89a\x01\0\x01\0");
        assert_eq!(
            image_from_data(&gif, Some("image/webp")).unwrap().format,
            "gif"
        );
        let webp = b64(b"RIFF\x1a\0\0\0WEBPVP8L");
        assert_eq!(
            image_from_data(&webp, Some("image/png")).unwrap().format,
            "webp"
        );
        // bytes of no image format Kiro takes are refused, naming what was declared
        assert_eq!(
            image_from_data(&b64(b"hello, not an image"), Some("image/png")).unwrap_err(),
            "image data is not a PNG, JPEG, GIF or WebP image (declared image/png)"
        );
    }
}
