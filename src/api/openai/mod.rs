//! The OpenAI Chat Completions dialect.

pub mod convert;
pub mod stream;
pub mod types;

pub use convert::to_conversation;
pub use stream::{ChatEncoder, ChatFolder};

use crate::api::ResponseMeta;
pub use types::ChatCompletionRequest;

use crate::error::GatewayError;

pub use crate::dialect::openai_error_json as error_json;

/// Marker type that plugs the OpenAI chat dialect into the translation layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAiChat;

impl crate::api::DialectApi for OpenAiChat {
    type Request = ChatCompletionRequest;
    type Encoder = ChatEncoder;
    type Folder = ChatFolder;
    const DIALECT: crate::api::Dialect = crate::api::Dialect::OpenAi;
    const ID_PREFIX: &'static str = "chatcmpl-";
    const ROUTE: &'static str = "/v1/chat/completions";

    fn model(req: &Self::Request) -> &str {
        &req.model
    }

    fn is_stream(req: &Self::Request) -> bool {
        req.stream
    }

    fn conversation(
        req: &Self::Request,
    ) -> Result<crate::api::conversation::Conversation, GatewayError> {
        to_conversation(req)
    }

    /// `reasoning_effort` decides; without it, the configured default.
    fn reasoning(
        req: &Self::Request,
        defaults: crate::api::thinking::ThinkingDefaults,
    ) -> Option<crate::api::thinking::ReasoningAsk> {
        use crate::api::thinking::ReasoningAsk;
        match &req.reasoning_effort {
            Some(e) => defaults.for_effort(e).map(|budget| ReasoningAsk {
                budget,
                adaptive: false,
                effort: Some(e.clone()),
            }),
            None => defaults.default_budget().map(ReasoningAsk::budget),
        }
    }

    fn encoder(req: &Self::Request, meta: ResponseMeta) -> Self::Encoder {
        ChatEncoder::new(
            meta,
            req.stream_options.as_ref().is_some_and(|o| o.include_usage),
        )
    }

    fn folder(_req: &Self::Request, meta: ResponseMeta) -> Self::Folder {
        ChatFolder::new(meta)
    }
}
