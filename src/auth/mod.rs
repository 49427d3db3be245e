//! Kiro credentials: loading from the five sources (see [`source`] for their precedence),
//! refreshing (single-flight, ahead of expiry), and writing rotated tokens back.

pub mod lock;
pub mod source;
pub mod token;

pub use lock::SourceLock;
pub use source::{AuthKind, CredentialSettings, CredentialSource, Credentials};
pub use token::{
    AccessToken, MemoryTokenStore, ProfileArnPolicy, TokenConfig, TokenManager, TokenOrigin,
    TokenState, TokenStatus, TokenStore,
};

pub use crate::kiro::AuthError;
