//! Kiro credentials: loading from the five sources (see [`source`] for their precedence),
//! refreshing (single-flight, ahead of expiry), and writing rotated tokens back.

pub mod lock;
pub mod source;
pub mod token;

pub use lock::SourceLock;
pub use source::{AuthKind, CredentialSettings, CredentialSource, Credentials};
pub use token::{
    AccessToken, ProfileArnPolicy, TokenConfig, TokenManager, TokenOrigin, TokenStatus,
};

/// A credential problem, worded for the person who has to fix it. Never carries a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// Nothing configured at all.
    #[error("{0}")]
    NoCredentials(String),
    /// A configured source could not be read.
    #[error("could not read credentials from {origin}: {detail}")]
    Load { origin: String, detail: String },
    /// The auth service refused the refresh token (revoked, expired, rotated away).
    #[error("the Kiro auth service refused the refresh token from {origin} ({status}: {message}); {hint}")]
    Refused {
        origin: String,
        status: u16,
        message: String,
        hint: String,
    },
    /// The refresh could not be done right now (network, 429, 5xx); a later try may work.
    #[error("refreshing the Kiro access token from {origin} failed: {detail}")]
    Transient { origin: String, detail: String },
    /// The service refused the Kiro API key (`KIRO_API_KEY`). There is nothing to refresh:
    /// the key itself is wrong, revoked or not entitled.
    #[error("Kiro refused the API key from KIRO_API_KEY ({status}: {message}); check that the key is complete and not revoked, and that the account's plan allows API keys (Kiro Pro+ tiers)")]
    ApiKeyRefused { status: u16, message: String },
    /// A rotated token could not be written back.
    #[error("could not write the refreshed token back to {origin}: {detail}")]
    Persist { origin: String, detail: String },
}

impl AuthError {
    /// A refresh that may succeed when tried again.
    pub fn is_transient(&self) -> bool {
        matches!(self, AuthError::Transient { .. })
    }
}
