//! The request rules the real service enforces (spec 3.2), as the mock checks them. A broken
//! rule answers what the service answers: 400 `Improperly formed request.`; the rule that broke
//! is returned too, so tests can assert on it (the real service never says).

use serde_json::Value;

use crate::kiro::types::{GenerateAssistantRequest, HistoryMessage, UserInputMessage};

/// Why the mock refused a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// 400 `Improperly formed request.` (the rule is for tests and logs only).
    Malformed(String),
    /// 400 `Invalid model. Please select a different model to continue.`
    InvalidModel(String),
}

fn bad(rule: impl Into<String>) -> Rejection {
    Rejection::Malformed(rule.into())
}

fn find_null(v: &Value, path: &mut String) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.iter().enumerate().any(|(i, x)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let found = find_null(x, path);
            if !found {
                path.truncate(len);
            }
            found
        }),
        Value::Object(m) => m.iter().any(|(k, x)| {
            let len = path.len();
            path.push('.');
            path.push_str(k);
            let found = find_null(x, path);
            if !found {
                path.truncate(len);
            }
            found
        }),
        _ => false,
    }
}

fn schema_problem(v: &Value) -> Option<&'static str> {
    match v {
        Value::Object(m) => {
            if m.contains_key("additionalProperties") {
                return Some("inputSchema contains additionalProperties");
            }
            if m.get("required")
                .and_then(Value::as_array)
                .is_some_and(|r| r.is_empty())
            {
                return Some("inputSchema has an empty required array");
            }
            m.values().find_map(schema_problem)
        }
        Value::Array(a) => a.iter().find_map(schema_problem),
        _ => None,
    }
}

fn check_user(
    m: &UserInputMessage,
    where_: &str,
    known_models: &[String],
) -> Result<(), Rejection> {
    if m.content.is_empty() {
        return Err(bad(format!("{where_}: empty content")));
    }
    if !known_models.is_empty() && !known_models.iter().any(|k| k == &m.model_id) {
        return Err(Rejection::InvalidModel(m.model_id.clone()));
    }
    if m.origin.is_empty() {
        return Err(bad(format!("{where_}: empty origin")));
    }
    for img in &m.images {
        if !["png", "jpeg", "gif", "webp"].contains(&img.format.as_str()) {
            return Err(bad(format!("{where_}: image format {:?}", img.format)));
        }
        let b = img.source.bytes.as_bytes();
        let bare = !b.is_empty()
            && b.len() % 4 == 0
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='));
        if !bare {
            return Err(bad(format!("{where_}: image bytes are not bare base64")));
        }
        // the service refuses an image whose bytes are not its declared format
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b)
            .unwrap_or_default();
        let actual = crate::kiro::types::sniff_image_format(&decoded);
        if actual != Some(img.format.as_str()) {
            return Err(bad(format!(
                "{where_}: image bytes are {} but the format says {:?}",
                actual.unwrap_or("no known image format"),
                img.format
            )));
        }
    }
    Ok(())
}

/// Check a raw body; `Ok` carries the parsed request.
pub fn validate(
    body: &[u8],
    known_models: &[String],
) -> Result<GenerateAssistantRequest, Rejection> {
    let raw: Value = serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let mut path = String::from("$");
    if find_null(&raw, &mut path) {
        return Err(bad(format!("null at {path}")));
    }
    let req: GenerateAssistantRequest =
        serde_json::from_value(raw).map_err(|e| bad(format!("shape: {e}")))?;
    let cs = &req.conversation_state;
    if cs.conversation_id.is_empty() {
        return Err(bad("empty conversationId"));
    }
    if cs.chat_trigger_type != "MANUAL" {
        return Err(bad("chatTriggerType is not MANUAL"));
    }
    let current = &cs.current_message.user_input_message;
    check_user(current, "currentMessage", known_models)?;
    let ctx = current
        .user_input_message_context
        .clone()
        .unwrap_or_default();
    for t in &ctx.tools {
        let spec = &t.tool_specification;
        let name_ok = !spec.name.is_empty()
            && spec.name.len() <= 64
            && spec
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return Err(bad(format!("tool name {:?}", spec.name)));
        }
        if spec.description.is_empty() || spec.description.chars().count() > 10_000 {
            return Err(bad(format!("tool {} description length", spec.name)));
        }
        if let Some(p) = schema_problem(&spec.input_schema.json) {
            return Err(bad(format!("tool {}: {p}", spec.name)));
        }
    }
    let tool_defined = |name: &str| {
        ctx.tools
            .iter()
            .any(|t| t.tool_specification.name.eq_ignore_ascii_case(name))
    };

    // history: user, assistant, user, assistant, ... ending with assistant
    let mut expect_user = true;
    let mut pending_uses: Vec<String> = Vec::new();
    for (i, h) in cs.history.iter().enumerate() {
        let where_ = format!("history[{i}]");
        match h {
            HistoryMessage::UserInputMessage(u) => {
                if !expect_user {
                    return Err(bad(format!("{where_}: two user messages in a row")));
                }
                check_user(u, &where_, known_models)?;
                let results = u
                    .user_input_message_context
                    .as_ref()
                    .map(|c| c.tool_results.as_slice())
                    .unwrap_or_default();
                answer_uses(&mut pending_uses, results, &where_)?;
                if !results.is_empty() && ctx.tools.is_empty() {
                    return Err(bad(format!("{where_}: toolResults without tools")));
                }
                expect_user = false;
            }
            HistoryMessage::AssistantResponseMessage(a) => {
                if expect_user {
                    return Err(bad(format!(
                        "{where_}: history must alternate and start with a user message"
                    )));
                }
                if a.content.is_empty() {
                    return Err(bad(format!("{where_}: empty assistant content")));
                }
                for u in &a.tool_uses {
                    if !u.input.is_object() {
                        return Err(bad(format!("{where_}: tool use input is not an object")));
                    }
                    if !tool_defined(&u.name) {
                        return Err(bad(format!("{where_}: tool {} is not defined", u.name)));
                    }
                }
                pending_uses = a.tool_uses.iter().map(|u| u.tool_use_id.clone()).collect();
                expect_user = true;
            }
        }
    }
    if !cs.history.is_empty() && !expect_user {
        return Err(bad("history ends with a user message"));
    }
    if !ctx.tool_results.is_empty() && ctx.tools.is_empty() {
        return Err(bad("currentMessage: toolResults without tools"));
    }
    answer_uses(&mut pending_uses, &ctx.tool_results, "currentMessage")?;
    Ok(req)
}

/// Each result must answer a use of the preceding assistant turn (once), and each use must be
/// answered.
fn answer_uses(
    pending: &mut Vec<String>,
    results: &[crate::kiro::types::ToolResult],
    where_: &str,
) -> Result<(), Rejection> {
    for r in results {
        match pending.iter().position(|id| id == &r.tool_use_id) {
            Some(i) => {
                pending.remove(i);
            }
            None => {
                return Err(bad(format!(
                "{where_}: toolResult {} answers no tool use of the preceding assistant message",
                r.tool_use_id
            )))
            }
        }
        if !["success", "error"].contains(&r.status.as_str()) {
            return Err(bad(format!("{where_}: toolResult status {:?}", r.status)));
        }
    }
    if let Some(id) = pending.first() {
        return Err(bad(format!("{where_}: tool use {id} is not answered")));
    }
    pending.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn models() -> Vec<String> {
        vec!["claude-sonnet-4.5".into()]
    }

    fn body(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    fn user(content: &str) -> Value {
        json!({"content": content, "modelId": "claude-sonnet-4.5", "origin": "AI_EDITOR"})
    }

    #[test]
    fn accepts_the_annotated_example() {
        let v = json!({"conversationState": {
        "chatTriggerType": "MANUAL", "conversationId": "c",
        "history": [
            {"userInputMessage": user("What is the weather in Lyon?")},
            {"assistantResponseMessage": {"content": "(empty)", "toolUses": [{"input": {"city": "Lyon"}, "name": "get_weather", "toolUseId": "t1"}]}}
        ],
        "currentMessage": {"userInputMessage": {
            "content": "Continue", "modelId": "claude-sonnet-4.5", "origin": "AI_EDITOR",
            "userInputMessageContext": {
                "tools": [{"toolSpecification": {"name": "get_weather", "description": "d", "inputSchema": {"json": {"type": "object"}}}}],
                "toolResults": [{"content": [{"text": "18 C"}], "status": "success", "toolUseId": "t1"}]
            }}}}});
        assert!(validate(&body(v), &models()).is_ok());
    }

    #[test]
    fn rejects_what_the_service_rejects() {
        let cases = [
            json!({"conversationState": {"chatTriggerType": "MANUAL", "conversationId": "c",
                "currentMessage": {"userInputMessage": user("")}}}),
            json!({"conversationState": {"chatTriggerType": "MANUAL", "conversationId": "c",
                "history": [{"assistantResponseMessage": {"content": "x"}}],
                "currentMessage": {"userInputMessage": user("hi")}}}),
            json!({"conversationState": {"chatTriggerType": "MANUAL", "conversationId": "c",
                "currentMessage": {"userInputMessage": user("hi")}, "profileArn": null}}),
            json!({"conversationState": {"chatTriggerType": "MANUAL", "conversationId": "c",
                "currentMessage": {"userInputMessage": {"content": "hi", "modelId": "claude-sonnet-4.5", "origin": "AI_EDITOR",
                  "userInputMessageContext": {"toolResults": [{"content": [{"text": "x"}], "status": "success", "toolUseId": "t"}]}}}}}),
            json!({"conversationState": {"chatTriggerType": "MANUAL", "conversationId": "c",
                "currentMessage": {"userInputMessage": {"content": "hi", "modelId": "claude-sonnet-4.5", "origin": "AI_EDITOR",
                  "userInputMessageContext": {"tools": [{"toolSpecification": {"name": "f", "description": "d",
                    "inputSchema": {"json": {"type": "object", "additionalProperties": false}}}}]}}}}}),
        ];
        for c in cases {
            assert!(
                matches!(
                    validate(&body(c.clone()), &models()),
                    Err(Rejection::Malformed(_))
                ),
                "{c}"
            );
        }
        let unknown_model = json!({"conversationState": {"chatTriggerType": "MANUAL", "conversationId": "c",
            "currentMessage": {"userInputMessage": {"content": "hi", "modelId": "gpt-4", "origin": "AI_EDITOR"}}}});
        assert_eq!(
            validate(&body(unknown_model), &models()),
            Err(Rejection::InvalidModel("gpt-4".into()))
        );
    }
}
