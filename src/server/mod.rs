//! The bundled server: the public layers plus routing, nothing private.
//!
//! - [`gateway`]: [`Gateway::from_config`] builds the shared pieces (HTTP clients, token
//!   managers, account pool, model catalogue, metrics); [`Gateway::refresh_models`] fetches the
//!   model list;
//! - [`background`]: [`Gateway::start_background`] starts every task a running gateway needs
//!   (catalogue refresh, account token checks, metrics upkeep, the dashboard's traffic
//!   samples), owned by one shutdown token;
//! - [`router`]: [`Gateway::router`] (or [`router`]) the axum router (`/`, `/health`,
//!   `/v1/models`, `/v1/chat/completions`, `/v1/messages`, `/v1/responses`, the admin APIs,
//!   `/metrics`, `/dashboard`; anything else a 404 in OpenAI error JSON) with the generic
//!   tower-http layers;
//! - [`access`]: the admin-key and metrics-access layers in front of the operator routes;
//! - [`routes`]: the handlers of the routes that are not chat stacks;
//! - [`serve`](mod@serve): [`serve`](fn@serve) runs a router with connection limits and
//!   graceful shutdown.
//!
//! `examples/mount_in_axum.rs` mounts the same router inside another application and starts
//! the background tasks with the one call.

pub mod access;
pub mod background;
pub mod gateway;
pub mod router;
pub mod routes;
pub mod serve;

pub use access::{AdminKeyLayer, MetricsAccessLayer};
pub use background::Background;
pub use gateway::Gateway;
pub use router::{normalize_path, router};
pub use serve::{default_max_connections, serve, ServeOptions};
