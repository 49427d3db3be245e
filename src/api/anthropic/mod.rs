//! The Anthropic Messages dialect.

pub mod convert;
pub mod stream;
pub mod types;

pub use convert::to_conversation;
pub use stream::{MessagesEncoder, MessagesFolder};
pub use types::MessagesRequest;

use crate::api::conversation::Conversation;
use crate::api::ResponseMeta;
use crate::error::GatewayError;

/// Marker type that plugs the Anthropic Messages dialect into the translation layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnthropicMessages;

impl crate::api::DialectApi for AnthropicMessages {
    type Request = MessagesRequest;
    type Encoder = MessagesEncoder;
    type Folder = MessagesFolder;
    const DIALECT: crate::api::Dialect = crate::api::Dialect::Anthropic;
    const ID_PREFIX: &'static str = "msg_";
    const ROUTE: &'static str = "/v1/messages";

    fn model(req: &Self::Request) -> &str {
        &req.model
    }

    fn is_stream(req: &Self::Request) -> bool {
        req.stream
    }

    fn conversation(req: &Self::Request) -> Result<Conversation, GatewayError> {
        to_conversation(req, true)
    }

    /// `thinking: {type: "enabled", budget_tokens}` → that budget (a budget request, any
    /// `output_config.effort` aside); `{type: "disabled"}` → none; `{type: "adaptive"}` → the
    /// budget for `output_config.effort` (the configured budget when no effort is given);
    /// absent → the configured default (with `output_config.effort`, when given, for a model
    /// that takes it natively).
    fn reasoning(
        req: &Self::Request,
        defaults: crate::api::thinking::ThinkingDefaults,
    ) -> Option<crate::api::thinking::ReasoningAsk> {
        use crate::api::thinking::ReasoningAsk;
        let effort = req
            .output_config
            .as_ref()
            .and_then(|o| o.get("effort"))
            .and_then(serde_json::Value::as_str);
        let Some(t) = &req.thinking else {
            return defaults.default_budget().map(|budget| ReasoningAsk {
                budget,
                adaptive: false,
                effort: effort.map(str::to_owned),
            });
        };
        match t.get("type").and_then(serde_json::Value::as_str) {
            Some("disabled") => None,
            Some("enabled") => Some(ReasoningAsk::budget(
                t.get("budget_tokens")
                    .and_then(serde_json::Value::as_u64)
                    .map(|b| b.min(u64::from(u32::MAX)) as u32)
                    .unwrap_or(defaults.budget),
            )),
            // adaptive (and any newer type): the effort decides
            _ => {
                let budget = match effort {
                    Some(e) => defaults.for_effort(e)?,
                    None => defaults.budget,
                };
                Some(ReasoningAsk {
                    budget,
                    adaptive: true,
                    effort: effort.map(str::to_owned),
                })
            }
        }
    }

    fn encoder(_req: &Self::Request, meta: ResponseMeta) -> Self::Encoder {
        MessagesEncoder::new(meta)
    }

    fn folder(_req: &Self::Request, meta: ResponseMeta) -> Self::Folder {
        MessagesFolder::new(meta)
    }
}
