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

impl crate::layers::translate::DialectApi for AnthropicMessages {
    type Request = MessagesRequest;
    type Encoder = MessagesEncoder;
    type Folder = MessagesFolder;
    const DIALECT: crate::api::Dialect = crate::api::Dialect::Anthropic;
    const ID_PREFIX: &'static str = "msg_";

    fn model(req: &Self::Request) -> &str {
        &req.model
    }

    fn is_stream(req: &Self::Request) -> bool {
        req.stream
    }

    fn conversation(req: &Self::Request) -> Result<Conversation, GatewayError> {
        to_conversation(req, true)
    }

    fn encoder(_req: &Self::Request, meta: ResponseMeta) -> Self::Encoder {
        MessagesEncoder::new(meta)
    }

    fn folder(_req: &Self::Request, meta: ResponseMeta) -> Self::Folder {
        MessagesFolder::new(meta)
    }
}
