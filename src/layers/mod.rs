//! Every concern of the gateway as a Tower layer. Each works alone over any service with the
//! right request and response types; [`crate::stack::gateway_stack`] stacks them in the order
//! the bundled server uses.

pub mod auth;
pub mod capture;
pub mod decode;
pub mod future;
pub mod metrics;
pub mod model;
pub mod respond;
pub mod retry;
pub mod translate;
pub mod upstream_capture;

pub use auth::{ApiKeyLayer, ClientKey, ClientName};
pub use capture::{CaptureConfig, DebugCaptureLayer, DebugMode};
pub use decode::{BodyBudget, BodySize, JsonBodyLayer, RawBody};
pub use metrics::{Metrics, MetricsLayer, RequestRecord};
pub use model::{ModelNameLayer, ModelRequest};
pub use respond::DialectLayer;
pub use retry::{KiroAuthLayer, RetryConfig, RetryLayer};
pub use translate::{DialectApi, TranslateConfig, TranslateLayer};
pub use upstream_capture::UpstreamCaptureLayer;
