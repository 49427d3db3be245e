//! Pre-flight: every rule the service enforces on a `generateAssistantResponse` body (spec 3.2),
//! checked on the translated request before it leaves.
//!
//! The conversion ([`conversation::to_kiro`](super::conversation::to_kiro)) already repairs what
//! can be repaired without changing the meaning (placeholders for empty contents, merged turns,
//! definitions for tools that only appear in history, long descriptions moved to the system
//! prompt, orphaned tool results and unanswered tool calls rendered as text, schemas cleaned).
//! What is left here cannot be repaired: instead of the service's opaque
//! `400 Improperly formed request.` the client gets a 400 in its dialect that names the message
//! (its own index), the field and the rule. A request that reaches this check broken in a way
//! the conversion should have repaired is reported the same way, never sent.
//!
//! | rule | checked |
//! | --- | --- |
//! | `alternation` | history starts with a user turn, alternates, ends with an assistant turn |
//! | `empty_content` | every `content` is a non-empty string |
//! | `tool_results_without_tools` | tool results need tool definitions in the request |
//! | `orphan_tool_result` | a result answers a tool use of the immediately preceding assistant turn |
//! | `duplicate_tool_result` | one result per tool use id |
//! | `unanswered_tool_use` | every history tool use is answered in the next user turn |
//! | `undefined_tool` | tools named by history tool uses are defined (case-insensitive) |
//! | `tool_name` | 1–64 characters of `[A-Za-z0-9_-]` |
//! | `tool_description` | non-empty, at most [`MAX_TOOL_DESCRIPTION`] characters |
//! | `tool_schema` | no `additionalProperties`, no empty `required` |
//! | `tool_input` | a tool use's input is a JSON object |
//! | `image_format` | png, jpeg, gif or webp |
//! | `image_base64` | bare base64 (no `data:` prefix, only base64 characters, padded length) |
//! | `trigger` | `chatTriggerType` is `MANUAL`, `conversationId` non-empty |
//!
//! The body size is checked by the translation layer (`KIRO_MAX_PAYLOAD_BYTES`), which answers
//! with the "prompt is too long" error clients compact on.

use serde_json::Value;

use crate::error::GatewayError;
use crate::kiro::types::{GenerateAssistantRequest, HistoryMessage, UserInputMessage};

/// Longest tool description the service takes (spec 3.2: about 10 000 characters).
pub const MAX_TOOL_DESCRIPTION: usize = 10_000;

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The client's message index, when the broken part came from one.
    pub message: Option<usize>,
    /// The client's own path to the broken part inside that message, when known (an image's
    /// `messages[0].content[1]`): it wins over `message` + `field` as the place named.
    pub part: Option<String>,
    /// The field, e.g. `content`, `tool_calls[0]`, `images[1]`, `tools[2].description`.
    pub field: String,
    pub rule: &'static str,
    pub detail: String,
}

impl Violation {
    /// The error, naming the place in the client's numbering: `list` is what the client's
    /// messages are called (`messages`, or `input` in the Responses API).
    pub fn into_error_in(self, list: &str) -> GatewayError {
        let (place, param) = match (&self.part, self.message) {
            (Some(p), _) => (p.clone(), p.clone()),
            (None, Some(i)) => (
                format!("{list}[{i}]"),
                format!("{list}[{i}].{}", self.field),
            ),
            (None, None) => (self.field.clone(), self.field.clone()),
        };
        GatewayError::invalid_request(format!(
            "{place}: {}; Kiro would refuse this request [rule: {}]",
            self.detail, self.rule
        ))
        .with_param(param)
        .with_code(format!("kiro_{}", self.rule))
    }

    /// [`Self::into_error_in`] for a request whose messages are `messages`.
    pub fn into_error(self) -> GatewayError {
        self.into_error_in("messages")
    }
}

/// The place a conversion refusal names in its message, from the client-side path of the
/// broken field (its `param`): the message and, where there is one, the content part or tool
/// call (`messages[0].content[1].image_url.url` → `messages[0].content[1]`). `None` for a path
/// outside the messages (`tools[0].name`, `n`), whose message says what it is about itself.
pub fn place(param: &str) -> Option<&str> {
    if !["messages[", "input["].iter().any(|l| param.starts_with(l)) {
        return None;
    }
    // the list index, then at most one more `.name[j]`
    let first = param.find(']')?;
    let rest = &param[first + 1..];
    let part_end = rest
        .strip_prefix('.')
        .and_then(|r| {
            let open = r.find('[')?;
            let close = r.find(']')?;
            (close > open && !r[..open].contains('.')).then_some(close + 2)
        })
        .unwrap_or(0);
    Some(&param[..first + 1 + part_end])
}

/// A conversion refusal: a 400 whose message starts with the [`place`] of `param` when it is
/// in the messages (`messages[0].content[1]: image data is not valid base64`).
pub fn refusal(detail: impl std::fmt::Display, param: impl Into<String>) -> GatewayError {
    let param = param.into();
    let message = match place(&param) {
        Some(p) => format!("{p}: {detail}"),
        None => detail.to_string(),
    };
    GatewayError::invalid_request(message).with_param(param)
}

fn schema_problem(v: &Value) -> Option<&'static str> {
    match v {
        Value::Object(m) => {
            if m.contains_key("additionalProperties") {
                return Some("contains additionalProperties");
            }
            if m.get("required")
                .and_then(Value::as_array)
                .is_some_and(|r| r.is_empty())
            {
                return Some("has an empty required array");
            }
            m.values().find_map(schema_problem)
        }
        Value::Array(a) => a.iter().find_map(schema_problem),
        _ => None,
    }
}

/// Bare standard base64: only the alphabet, `=` padding at the end, length a multiple of 4.
pub fn is_bare_base64(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !b.len().is_multiple_of(4) {
        return false;
    }
    let body = s.trim_end_matches('=');
    b.len() - body.len() <= 2
        && body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

/// Check `req` against every rule; `sources` maps history entries, then the current message,
/// to client message indexes (from
/// [`to_kiro_traced`](super::conversation::to_kiro_traced)).
pub fn check(
    req: &GenerateAssistantRequest,
    sources: &[Option<usize>],
    list: &str,
) -> Result<(), GatewayError> {
    violations(req, sources)
        .into_iter()
        .next()
        .map_or(Ok(()), |v| Err(v.into_error_in(list)))
}

/// Every broken rule, in request order.
pub fn violations(req: &GenerateAssistantRequest, sources: &[Option<usize>]) -> Vec<Violation> {
    let out = std::cell::RefCell::new(Vec::new());
    let cs = &req.conversation_state;
    let src = |i: usize| sources.get(i).copied().flatten();
    let current_src = src(cs.history.len());
    let push = |message: Option<usize>,
                part: Option<String>,
                field: String,
                rule: &'static str,
                detail: String| {
        out.borrow_mut().push(Violation {
            message,
            part,
            field,
            rule,
            detail,
        })
    };
    let mut v = |message: Option<usize>, field: String, rule: &'static str, detail: String| {
        push(message, None, field, rule, detail)
    };
    if cs.chat_trigger_type != "MANUAL" || cs.conversation_id.is_empty() {
        v(
            None,
            "conversationState".into(),
            "trigger",
            "the conversation needs chatTriggerType MANUAL and a conversation id".into(),
        );
    }
    let current = &cs.current_message.user_input_message;
    let ctx = current.user_input_message_context.as_ref();
    let tools = ctx.map(|c| c.tools.as_slice()).unwrap_or_default();
    for (i, t) in tools.iter().enumerate() {
        let s = &t.tool_specification;
        if !valid_tool_name(&s.name) {
            v(
                None,
                format!("tools[{i}].name"),
                "tool_name",
                format!(
                    "tool name {:?} must be 1-64 characters of letters, digits, '_' and '-'",
                    s.name
                ),
            );
        }
        let len = s.description.chars().count();
        if s.description.trim().is_empty() || len > MAX_TOOL_DESCRIPTION {
            v(
                None,
                format!("tools[{i}].description"),
                "tool_description",
                format!(
                    "the description of tool {:?} is {len} characters; Kiro takes 1 to {MAX_TOOL_DESCRIPTION} (set TOOL_DESCRIPTION_MAX_LENGTH to move long ones to the system prompt)",
                    s.name
                ),
            );
        }
        if let Some(p) = schema_problem(&s.input_schema.json) {
            v(
                None,
                format!("tools[{i}].input_schema"),
                "tool_schema",
                format!("the input schema of tool {:?} {p}", s.name),
            );
        }
    }
    // one set of the defined names (case-insensitive, as the service compares them), so the
    // checks below stay linear in the number of tool uses
    let defined_names: std::collections::HashSet<String> = tools
        .iter()
        .map(|t| t.tool_specification.name.to_ascii_lowercase())
        .collect();
    let defined = |name: &str| defined_names.contains(&name.to_ascii_lowercase());
    let check_user =
        |u: &UserInputMessage,
         at: Option<usize>,
         v: &mut dyn FnMut(Option<usize>, String, &'static str, String)| {
            if u.content.is_empty() {
                v(
                    at,
                    "content".into(),
                    "empty_content",
                    "the message content is empty".into(),
                );
            }
            // an image names its own content part, as the conversion recorded it
            for (k, img) in u.images.iter().enumerate() {
                if !["png", "jpeg", "gif", "webp"].contains(&img.format.as_str()) {
                    push(
                        at,
                        img.place.clone(),
                        format!("images[{k}]"),
                        "image_format",
                        format!(
                            "image format {:?} is not png, jpeg, gif or webp",
                            img.format
                        ),
                    );
                }
                if !is_bare_base64(&img.source.bytes) {
                    push(
                        at,
                        img.place.clone(),
                        format!("images[{k}]"),
                        "image_base64",
                        "image data is not valid base64".into(),
                    );
                }
            }
        };
    // history: user, assistant, user, …, assistant; then the current (user) message
    let mut pending: Vec<&str> = Vec::new();
    let mut pending_set: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut expect_user = true;
    let n = cs.history.len();
    for idx in 0..=n {
        let (user, at) = match cs.history.get(idx) {
            Some(HistoryMessage::AssistantResponseMessage(a)) => {
                let at = src(idx);
                if expect_user {
                    v(
                        at,
                        "role".into(),
                        "alternation",
                        "turns must alternate user and assistant, starting with a user turn".into(),
                    );
                }
                if a.content.is_empty() {
                    v(
                        at,
                        "content".into(),
                        "empty_content",
                        "the message content is empty".into(),
                    );
                }
                for (k, u) in a.tool_uses.iter().enumerate() {
                    if !u.input.is_object() {
                        v(
                            at,
                            format!("tool_calls[{k}]"),
                            "tool_input",
                            format!(
                                "the input of tool call {} is not a JSON object",
                                u.tool_use_id
                            ),
                        );
                    }
                    if !defined(&u.name) {
                        v(
                            at,
                            format!("tool_calls[{k}]"),
                            "undefined_tool",
                            format!("tool {:?} is called here but not defined in tools", u.name),
                        );
                    }
                }
                pending = a.tool_uses.iter().map(|u| u.tool_use_id.as_str()).collect();
                pending_set = pending.iter().copied().collect();
                expect_user = true;
                continue;
            }
            Some(HistoryMessage::UserInputMessage(u)) => (u, src(idx)),
            None => (current, current_src),
        };
        if !expect_user {
            v(
                at,
                "role".into(),
                "alternation",
                "two user turns in a row (the history must end with an assistant turn)".into(),
            );
        }
        check_user(user, at, &mut v);
        let results = user
            .user_input_message_context
            .as_ref()
            .map(|c| c.tool_results.as_slice())
            .unwrap_or_default();
        if !results.is_empty() && tools.is_empty() {
            v(
                at,
                "tool_results".into(),
                "tool_results_without_tools",
                "tool results need the tool definitions in the request".into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for r in results {
            if !seen.insert(r.tool_use_id.as_str()) {
                v(
                    at,
                    format!("tool_results[{}]", r.tool_use_id),
                    "duplicate_tool_result",
                    format!("tool call {} is answered twice", r.tool_use_id),
                );
            } else if !pending_set.contains(r.tool_use_id.as_str()) {
                v(
                    at,
                    format!("tool_results[{}]", r.tool_use_id),
                    "orphan_tool_result",
                    format!(
                        "the result for {} answers no tool call of the preceding assistant turn",
                        r.tool_use_id
                    ),
                );
            }
        }
        for id in &pending {
            if !seen.contains(id) {
                v(
                    at,
                    "tool_results".into(),
                    "unanswered_tool_use",
                    format!("tool call {id} of the preceding assistant turn has no result here"),
                );
            }
        }
        pending.clear();
        pending_set.clear();
        expect_user = false;
    }
    out.into_inner()
}

/// Name of a tool the service accepts.
pub fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(content: &str) -> Value {
        json!({"userInputMessage": {"content": content, "modelId": "m", "origin": "AI_EDITOR"}})
    }

    fn req(history: Value, current: Value) -> GenerateAssistantRequest {
        serde_json::from_value(json!({"conversationState": {
            "conversationId": "c", "chatTriggerType": "MANUAL",
            "history": history, "currentMessage": {"userInputMessage": current}}}))
        .unwrap()
    }

    fn current(extra: Value) -> Value {
        let mut c = json!({"content": "now", "modelId": "m", "origin": "AI_EDITOR"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    fn tools() -> Value {
        json!([{"toolSpecification": {"name": "f", "description": "d",
                                       "inputSchema": {"json": {"type": "object"}}}}])
    }

    fn rules(r: &GenerateAssistantRequest) -> Vec<&'static str> {
        violations(r, &[Some(0), Some(1), Some(2), Some(3)])
            .into_iter()
            .map(|v| v.rule)
            .collect()
    }

    fn assistant(uses: Value) -> Value {
        json!({"assistantResponseMessage": {"content": "a", "toolUses": uses}})
    }

    fn results(ids: &[&str]) -> Value {
        Value::Array(
            ids.iter()
                .map(|id| json!({"toolUseId": id, "status": "success", "content": [{"text": "r"}]}))
                .collect(),
        )
    }

    #[test]
    fn a_well_formed_request_passes() {
        let r = req(
            json!([
                user("hi"),
                assistant(json!([{"toolUseId": "t1", "name": "f", "input": {}}]))
            ]),
            current(
                json!({"userInputMessageContext": {"tools": tools(), "toolResults": results(&["t1"])}}),
            ),
        );
        assert!(check(&r, &[], "messages").is_ok(), "{:?}", rules(&r));
    }

    #[test]
    fn each_rule_is_detected() {
        let use_ = |id: &str, name: &str, input: Value| json!({"toolUseId": id, "name": name, "input": input});
        let ctx = |t: Value, res: Value| json!({"userInputMessageContext": {"tools": t, "toolResults": res}});
        let cases: Vec<(&str, GenerateAssistantRequest)> = vec![
            (
                "alternation",
                req(json!([user("a"), user("b")]), current(json!({}))),
            ),
            (
                "alternation",
                req(json!([assistant(json!([]))]), current(json!({}))),
            ),
            (
                "empty_content",
                req(json!([user(""), assistant(json!([]))]), current(json!({}))),
            ),
            (
                "empty_content",
                req(json!([]), current(json!({"content": ""}))),
            ),
            (
                "tool_results_without_tools",
                req(
                    json!([user("a"), assistant(json!([use_("t1", "f", json!({}))]))]),
                    current(ctx(json!([]), results(&["t1"]))),
                ),
            ),
            (
                "orphan_tool_result",
                req(
                    json!([user("a"), assistant(json!([use_("t1", "f", json!({}))]))]),
                    current(ctx(tools(), results(&["t1", "t2"]))),
                ),
            ),
            (
                "duplicate_tool_result",
                req(
                    json!([user("a"), assistant(json!([use_("t1", "f", json!({}))]))]),
                    current(ctx(tools(), results(&["t1", "t1"]))),
                ),
            ),
            (
                "unanswered_tool_use",
                req(
                    json!([
                        user("a"),
                        assistant(json!([
                            use_("t1", "f", json!({})),
                            use_("t2", "f", json!({}))
                        ]))
                    ]),
                    current(ctx(tools(), results(&["t1"]))),
                ),
            ),
            (
                "undefined_tool",
                req(
                    json!([user("a"), assistant(json!([use_("t1", "g", json!({}))]))]),
                    current(ctx(tools(), results(&["t1"]))),
                ),
            ),
            (
                "tool_input",
                req(
                    json!([user("a"), assistant(json!([use_("t1", "f", json!([1]))]))]),
                    current(ctx(tools(), results(&["t1"]))),
                ),
            ),
            (
                "tool_name",
                req(
                    json!([]),
                    current(ctx(
                        json!([{"toolSpecification":
                {"name": "bad name", "description": "d", "inputSchema": {"json": {}}}}]),
                        json!([]),
                    )),
                ),
            ),
            (
                "tool_description",
                req(
                    json!([]),
                    current(ctx(
                        json!([{"toolSpecification":
                {"name": "f", "description": "x".repeat(10_001), "inputSchema": {"json": {}}}}]),
                        json!([]),
                    )),
                ),
            ),
            (
                "tool_schema",
                req(
                    json!([]),
                    current(ctx(
                        json!([{"toolSpecification":
                {"name": "f", "description": "d", "inputSchema": {"json": {"type": "object",
                 "properties": {"a": {"type": "object", "additionalProperties": true}}}}}}]),
                        json!([]),
                    )),
                ),
            ),
            (
                "image_format",
                req(
                    json!([]),
                    current(json!({"images": [{"format": "bmp", "source": {"bytes": "AAAA"}}]})),
                ),
            ),
            (
                "image_base64",
                req(
                    json!([]),
                    current(
                        json!({"images": [{"format": "png", "source": {"bytes": "data:image/png;base64,AAAA"}}]}),
                    ),
                ),
            ),
        ];
        for (rule, r) in cases {
            let text = match rule {
                "alternation" => "user turn",
                "empty_content" => "content is empty",
                "tool_results_without_tools" => "need the tool definitions",
                "orphan_tool_result" => "answers no tool call of the preceding assistant turn",
                "duplicate_tool_result" => "is answered twice",
                "unanswered_tool_use" => "has no result here",
                "undefined_tool" => "is called here but not defined in tools",
                "tool_input" => "is not a JSON object",
                "tool_name" => "must be 1-64 characters",
                "tool_description" => "Kiro takes 1 to 10000",
                "tool_schema" => "contains additionalProperties",
                "image_format" => "is not png, jpeg, gif or webp",
                "image_base64" => "is not valid base64",
                other => panic!("no expected text for {other}"),
            };
            let found = violations(&r, &[Some(0), Some(1), Some(2), Some(3)]);
            let v = found
                .iter()
                .find(|v| v.rule == rule)
                .unwrap_or_else(|| panic!("{rule}: found {found:?}"));
            let err = v.clone().into_error();
            let msg = err.message();
            assert!(msg.contains(text), "{rule}: {msg}");
            assert!(msg.contains(&format!("[rule: {rule}]")), "{msg}");
        }
        let mut r = req(json!([]), current(json!({})));
        r.conversation_state.chat_trigger_type = "AUTO".into();
        assert_eq!(rules(&r), ["trigger"]);
    }

    #[test]
    fn the_error_names_the_client_message_the_field_and_the_rule() {
        let r = req(json!([user("a"), user("b")]), current(json!({})));
        let e = check(&r, &[Some(0), Some(4), Some(7)], "messages").unwrap_err();
        assert_eq!(e.status(), 400);
        assert_eq!(
            e.message(),
            "messages[4]: two user turns in a row (the history must end with an assistant turn); Kiro would refuse this request [rule: alternation]"
        );
        assert_eq!(e.param(), Some("messages[4].role"));
        assert_eq!(e.code(), Some("kiro_alternation"));
        // the Responses API numbers its `input`
        let e = check(&r, &[Some(0), Some(4), Some(7)], "input").unwrap_err();
        assert!(
            e.message().starts_with("input[4]: two user turns"),
            "{}",
            e.message()
        );
        assert_eq!(e.param(), Some("input[4].role"));
    }

    #[test]
    fn an_image_is_named_by_its_own_content_part() {
        let mut r = req(
            json!([]),
            current(
                json!({"images": [{"format": "png", "source": {"bytes": "AAAA"}},
                                      {"format": "png", "source": {"bytes": "not base64!"}}]}),
            ),
        );
        r.conversation_state
            .current_message
            .user_input_message
            .images[1]
            .place = Some("messages[2].content[3]".into());
        let e = check(&r, &[Some(2)], "messages").unwrap_err();
        assert_eq!(
            e.message(),
            "messages[2].content[3]: image data is not valid base64; Kiro would refuse this request [rule: image_base64]"
        );
        assert_eq!(e.param(), Some("messages[2].content[3]"));
    }

    #[test]
    fn a_refusal_names_the_message_and_content_part() {
        assert_eq!(
            place("messages[0].content[1].image_url.url"),
            Some("messages[0].content[1]")
        );
        assert_eq!(
            place("messages[2].tool_calls[0].function.arguments"),
            Some("messages[2].tool_calls[0]")
        );
        assert_eq!(place("messages[1].role"), Some("messages[1]"));
        assert_eq!(place("messages[1].content"), Some("messages[1]"));
        assert_eq!(
            place("input[3].output[1].image_url"),
            Some("input[3].output[1]")
        );
        assert_eq!(place("input[12]"), Some("input[12]"));
        assert_eq!(place("tools[0].name"), None);
        let e = refusal(
            "image data is not valid base64",
            "messages[0].content[1].image_url.url",
        );
        assert_eq!(
            e.message(),
            "messages[0].content[1]: image data is not valid base64"
        );
        assert_eq!(e.param(), Some("messages[0].content[1].image_url.url"));
        assert_eq!(refusal("n must be 1", "n").message(), "n must be 1");
    }

    #[test]
    fn base64_check() {
        assert!(is_bare_base64("AAAA"));
        assert!(is_bare_base64("iVBORw0KGgo="));
        assert!(!is_bare_base64("data:image/png;base64,AAAA"));
        assert!(!is_bare_base64("AAA"));
        assert!(!is_bare_base64("AA A"));
        assert!(!is_bare_base64(""));
        assert!(!is_bare_base64("A==="));
    }
}
