//! The request-context types: the values one layer of a stack puts into a request's (or a
//! [`GenerateRequest`](crate::kiro::GenerateRequest)'s) extensions for the layers below it, or
//! for itself on the way back. A leaf of the crate: every layer may import it, it imports no
//! layer.
//!
//! | type | inserted by | read by | when it is absent |
//! |---|---|---|---|
//! | [`Dialect`] | [`DialectLayer`](crate::layers::DialectLayer) (the router or [`gateway_stack`](crate::stack::gateway_stack) marks each route) | [`ApiKeyLayer`](crate::layers::ApiKeyLayer) (wording), [`DebugCaptureLayer`](crate::layers::DebugCaptureLayer) | the key refusal names both key headers; the capture keeps no client bytes for a refusal |
//! | [`RequestRecord`] | [`MetricsLayer`](crate::layers::MetricsLayer) | API key (client), translation (model, usage, stream failure), retry and [`KiroAuthLayer`](crate::layers::KiroAuthLayer) (attempts, retries), [`AccountPool`](crate::accounts::AccountPool) (account) | nothing is recorded: no metrics layer, nothing to count into |
//! | [`ClientName`] | [`ApiKeyLayer`](crate::layers::ApiKeyLayer) | translation (the pool's stickiness key) | stickiness is per conversation only, not per client key |
//! | [`RawBody`] | [`JsonBodyLayer`](crate::layers::JsonBodyLayer) | [`DebugCaptureLayer`](crate::layers::DebugCaptureLayer) (takes it out) | the capture's `request_body.json` is empty |
//! | [`BodySize`] | [`JsonBodyLayer`](crate::layers::JsonBodyLayer) | [`TranslateLayer`](crate::layers::TranslateLayer) | the request is translated on the async worker (as a small one is) |
//! | [`CaptureHandle`] | [`DebugCaptureLayer`](crate::layers::DebugCaptureLayer) (when `DEBUG_MODE` is not `off`) | translation (Kiro body, upstream events), [`AccountPool`](crate::accounts::AccountPool) (per-account body) | nothing is captured |
//! | [`ResolvedModel`] | [`ModelNameLayer`](crate::layers::ModelNameLayer) | [`TranslateLayer`](crate::layers::TranslateLayer) | **an error**: a 500 naming `ModelNameLayer` (translation needs the Kiro model id) |
//! | [`ConversationKey`] | [`TranslateLayer`](crate::layers::TranslateLayer) (with several accounts) | [`AccountPool`](crate::accounts::AccountPool) | the pool picks an account without stickiness |
//! | [`FirstTokenDeadline`] | [`RetryLayer`](crate::layers::RetryLayer) (per attempt) | [`AccountPool`](crate::accounts::AccountPool) (an attempt's probe) | no deadline below: the retry layer's own timeout still applies |
//! | [`RefreshBudget`] | [`RetryLayer`](crate::layers::RetryLayer) (per client request) | [`KiroAuthLayer`](crate::layers::KiroAuthLayer) | each call is its own request: at most one forced refresh per call |
//!
//! Every type is cheap to clone; the shared ones ([`RequestRecord`], [`CaptureHandle`],
//! [`RefreshBudget`]) are handles whose clones write into one place.

#![deny(missing_docs)]

pub mod capture;
pub mod record;
pub mod usage;

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;

pub use crate::dialect::Dialect;
pub use crate::models::ResolvedModel;
pub use capture::CaptureHandle;
pub use record::{RequestRecord, RetryCause};
pub use usage::{Usage, UsageReport};

/// The name of the client key a request presented, in its extensions (never the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientName(pub Arc<str>);

/// The request body exactly as the client sent it.
#[derive(Debug, Clone)]
pub struct RawBody(pub Bytes);

/// The size of the request body as read, in bytes (a request extension the translation uses
/// to decide whether its work is large enough to move off the async workers).
#[derive(Debug, Clone, Copy)]
pub struct BodySize(pub usize);

/// When the current attempt's first event must have arrived (`FIRST_TOKEN_TIMEOUT` from its
/// start), in the attempt's extensions; the retry layer abandons the attempt then.
#[derive(Debug, Clone, Copy)]
pub struct FirstTokenDeadline(pub tokio::time::Instant);

/// Whether this request already forced a token refresh. The retry layer puts one into the
/// request's extensions, so all its attempts (clones) share it: an invalid-token 403 refreshes
/// at most once per client request, however many attempts the retry layer makes.
#[derive(Debug, Clone, Default)]
pub struct RefreshBudget(Arc<std::sync::atomic::AtomicBool>);

impl RefreshBudget {
    /// True the first time only.
    pub fn take(&self) -> bool {
        !self.0.swap(true, std::sync::atomic::Ordering::SeqCst)
    }
}

/// The conversation a request belongs to, for stickiness (put into the
/// [`GenerateRequest`](crate::kiro::GenerateRequest) extensions by the translation; see the module docs for how it is
/// derived).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConversationKey(pub u64);

impl ConversationKey {
    /// The session headers clients send, in the order they are looked at.
    pub const HEADERS: [&'static str; 3] =
        ["x-session-id", "x-claude-code-session-id", "session_id"];

    /// From the client's session header, if it sent one.
    pub fn from_headers(headers: &http::HeaderMap) -> Option<ConversationKey> {
        Self::HEADERS.iter().find_map(|h| {
            let v = headers.get(*h)?.as_bytes();
            (!v.is_empty()).then(|| Self::of(&[b"header", v]))
        })
    }

    /// A hash of some parts (each capped at 4 KiB: the start of a prompt says which
    /// conversation it is).
    pub fn of(parts: &[&[u8]]) -> ConversationKey {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for p in parts {
            let p = &p[..p.len().min(4096)];
            p.len().hash(&mut h);
            p.hash(&mut h);
        }
        ConversationKey(h.finish())
    }
}
