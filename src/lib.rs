//! kiro-gateway: OpenAI- and Anthropic-compatible access to the Claude models of a Kiro
//! subscription, built as composable Tower layers over a hyper/rustls client.
//!
//! - [`kiro`]: the upstream (wire types, event-stream decoder, typed events, client service);
//! - [`auth`]: credentials, single-flight refresh, write-back;
//! - [`accounts`]: several Kiro accounts: selection, stickiness, failover, cool-downs;
//! - [`api`]: the public dialects and the conversation model they share;
//! - [`context`]: the request-context types the layers pass down (a table of who inserts
//!   and who reads each);
//! - [`layers`]: every concern as a Tower layer, each usable alone;
//! - [`stack`]: the layers assembled over the account pool ([`stack::gateway_stack`]);
//! - [`server`]: the bundled server, built only from the public pieces above;
//! - [`codex_catalog`]: model metadata in the Codex CLI's catalogue shape;
//! - [`dashboard`]: the operator page and the traffic history behind its charts;
//! - [`mock`]: a mock Kiro upstream for tests, benches and the offline demo.

pub mod accounts;
pub mod api;
pub mod auth;
pub mod body;
pub mod codex_catalog;
pub mod config;
pub mod context;
pub mod dashboard;
pub mod dialect;
pub mod error;
pub mod kiro;
pub mod layers;
pub mod mock;
pub mod models;
pub mod secret;
pub mod server;
pub mod stack;

pub use error::GatewayError;

/// Lock a mutex, taking over a poisoned one: a panic elsewhere while it was held does not make
/// the data unusable here (every guarded state in the crate is changed by whole assignments).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
pub use secret::Secret;
