//! kiro-gateway: OpenAI- and Anthropic-compatible access to the Claude models of a Kiro
//! subscription, built as composable Tower layers over a hyper/rustls client.

pub mod auth;
pub mod kiro;
pub mod mock;
pub mod secret;

pub use secret::Secret;
