//! The Kiro side: wire types, the event-stream decoder, typed events and the HTTP client.

pub mod client;
pub mod error;
pub mod events;
pub mod eventstream;
pub mod types;

pub use client::{
    ApiProtocol, BearerKind, BodyRequirements, EndpointTemplates, EventStream, GenerateRequest,
    GenerateResponse, HttpConfig, KiroBody, KiroClient, KiroClientConfig, KiroEvents, KiroHeaders,
    UpstreamHttp,
};
pub use error::{AuthError, Error, Failure, UpstreamStatus, KIRO_CREDENTIALS_REFUSED};
pub use events::{
    Event, Metadata, StreamException, TokenUsage, ToolCallAssembler, ToolInput, ToolUseEvent,
};
