//! Serde types of the Kiro wire JSON: the generateAssistantResponse request and the
//! ListAvailableModels answer. Field names are the wire's; absent optional fields are omitted
//! (the service rejects JSON `null`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Body of `POST /generateAssistantResponse`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateAssistantRequest {
    pub conversation_state: ConversationState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_arn: Option<String>,
    /// Native reasoning controls, shaped by the model's `additionalModelRequestFieldsSchema`
    /// (inner keys snake_case, e.g. `{"thinking":{"type":"enabled","budget_tokens":4000}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_model_request_fields: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationState {
    pub conversation_id: String,
    /// Always `MANUAL` for ordinary chat.
    pub chat_trigger_type: String,
    pub current_message: CurrentMessage,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryMessage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrentMessage {
    pub user_input_message: UserInputMessage,
}

/// One entry of `history`: exactly one of the two members is present on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HistoryMessage {
    UserInputMessage(UserInputMessage),
    AssistantResponseMessage(AssistantResponseMessage),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInputMessage {
    pub content: String,
    pub model_id: String,
    /// `AI_EDITOR` on the q.amazonaws.com protocol.
    pub origin: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_input_message_context: Option<UserInputMessageContext>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInputMessageContext {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_results: Vec<ToolResult>,
}

impl UserInputMessageContext {
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty() && self.tool_results.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// `png`, `jpeg`, `gif` or `webp`.
    pub format: String,
    pub source: ImageSource,
    /// Where the client sent it (`messages[0].content[1]`), for error messages; never sent.
    #[serde(skip)]
    pub place: Option<String>,
}

/// The [`Image::format`] of `bytes`, from its magic number: `png`, `jpeg`, `gif` or `webp`
/// (`None`: none of the formats the service takes).
pub fn sniff_image_format(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("gif")
    } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        Some("webp")
    } else {
        None
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSource {
    /// Base64 without a `data:` prefix.
    pub bytes: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    pub tool_specification: ToolSpecification,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolSpecification {
    pub name: String,
    pub description: String,
    pub input_schema: InputSchema,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSchema {
    pub json: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolResult {
    pub tool_use_id: String,
    pub content: Vec<ToolResultContent>,
    /// `success` or `error`.
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResultContent {
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssistantResponseMessage {
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_uses: Vec<ToolUse>,
    /// Signed native reasoning sent back: `{"reasoningText":{"text","signature"}}` or
    /// `{"redactedContent":"…"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUse {
    pub tool_use_id: String,
    pub name: String,
    /// A JSON object.
    pub input: Value,
}

/// Answer of `ListAvailableModels`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListAvailableModelsResponse {
    #[serde(default)]
    pub models: Vec<ModelInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_model: Option<ModelInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// One model of the catalogue; fields the gateway does not use are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    pub model_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_limits: Option<TokenLimits>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serialises_to_the_wire_shape_without_nulls() {
        let req = GenerateAssistantRequest {
            conversation_state: ConversationState {
                conversation_id: "c1".into(),
                chat_trigger_type: "MANUAL".into(),
                history: vec![
                    HistoryMessage::UserInputMessage(UserInputMessage {
                        content: "hi".into(),
                        model_id: "claude-sonnet-4.5".into(),
                        origin: "AI_EDITOR".into(),
                        ..Default::default()
                    }),
                    HistoryMessage::AssistantResponseMessage(AssistantResponseMessage {
                        content: "(empty)".into(),
                        tool_uses: vec![ToolUse {
                            tool_use_id: "t1".into(),
                            name: "f".into(),
                            input: json!({"a": 1}),
                        }],
                        reasoning_content: None,
                    }),
                ],
                current_message: CurrentMessage {
                    user_input_message: UserInputMessage {
                        content: "Continue".into(),
                        model_id: "claude-sonnet-4.5".into(),
                        origin: "AI_EDITOR".into(),
                        images: vec![Image {
                            format: "png".into(),
                            source: ImageSource {
                                bytes: "AAAA".into(),
                            },
                            place: None,
                        }],
                        user_input_message_context: Some(UserInputMessageContext {
                            tools: vec![Tool {
                                tool_specification: ToolSpecification {
                                    name: "f".into(),
                                    description: "d".into(),
                                    input_schema: InputSchema {
                                        json: json!({"type":"object"}),
                                    },
                                },
                            }],
                            tool_results: vec![ToolResult {
                                tool_use_id: "t1".into(),
                                content: vec![ToolResultContent { text: "ok".into() }],
                                status: "success".into(),
                            }],
                        }),
                    },
                },
            },
            profile_arn: None,
            additional_model_request_fields: None,
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(
            v,
            json!({"conversationState": {
                "conversationId": "c1",
                "chatTriggerType": "MANUAL",
                "history": [
                    {"userInputMessage": {"content": "hi", "modelId": "claude-sonnet-4.5", "origin": "AI_EDITOR"}},
                    {"assistantResponseMessage": {"content": "(empty)", "toolUses": [{"toolUseId": "t1", "name": "f", "input": {"a": 1}}]}}
                ],
                "currentMessage": {"userInputMessage": {
                    "content": "Continue", "modelId": "claude-sonnet-4.5", "origin": "AI_EDITOR",
                    "images": [{"format": "png", "source": {"bytes": "AAAA"}}],
                    "userInputMessageContext": {
                        "tools": [{"toolSpecification": {"name": "f", "description": "d", "inputSchema": {"json": {"type": "object"}}}}],
                        "toolResults": [{"toolUseId": "t1", "content": [{"text": "ok"}], "status": "success"}]
                    }
                }}
            }})
        );
        let back: GenerateAssistantRequest = serde_json::from_value(v).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn parses_a_model_list_keeping_unknown_fields() {
        let v = json!({"models": [{"modelId": "claude-sonnet-4.5", "modelName": "Claude Sonnet 4.5",
            "tokenLimits": {"maxInputTokens": 200000, "maxOutputTokens": 64000}, "rateMultiplier": 1.3}],
            "defaultModel": {"modelId": "auto"}, "nextToken": "n2"});
        let r: ListAvailableModelsResponse = serde_json::from_value(v).unwrap();
        assert_eq!(r.models[0].model_id, "claude-sonnet-4.5");
        assert_eq!(
            r.models[0].token_limits.as_ref().unwrap().max_input_tokens,
            Some(200000)
        );
        assert_eq!(r.models[0].extra["rateMultiplier"], json!(1.3));
        assert_eq!(r.next_token.as_deref(), Some("n2"));
    }
}
