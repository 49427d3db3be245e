//! An existing axum application that mounts the gateway under `/llm`, next to its own routes:
//! `cargo run --example mount_in_axum`, then
//! `curl localhost:3000/llm/v1/chat/completions -H 'content-type: application/json' -d '{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}'`.
//!
//! It reads the gateway's usual configuration (config.toml, .env, environment); with no Kiro
//! credentials it runs on the bundled offline mock upstream.

use axum::routing::get;
use axum::Router;
use kiro_gateway::config::Config;
use kiro_gateway::mock::{MockConfig, MockKiro};
use kiro_gateway::server::Gateway;
use tokio_util::sync::CancellationToken;

/// The application: its own routes, plus the gateway under a prefix.
fn app(gateway: &Gateway) -> Router {
    Router::new()
        .route("/", get(|| async { "my application" }))
        .route("/status", get(|| async { "ok" }))
        .nest("/llm", gateway.router())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let mut cfg = Config::load(None)?;
    let mut _mock = None;
    if cfg.refresh_token.is_none()
        && cfg.kiro_creds_file.is_none()
        && cfg.kiro_cli_db_file.is_none()
    {
        let mock = MockKiro::start(MockConfig::default()).await?;
        cfg.use_mock(&mock);
        _mock = Some(mock);
        println!("no Kiro credentials: using the offline mock upstream");
    }
    let gateway = Gateway::from_config(&cfg.validate()?)?;
    // the gateway's own tasks (model list refresh, metrics upkeep, the dashboard's history),
    // stopped with the application by one token
    let shutdown = CancellationToken::new();
    let background = gateway.start_background(&shutdown);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://127.0.0.1:3000 (gateway under /llm)");
    let stop = shutdown.clone();
    axum::serve(listener, app(&gateway))
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        })
        .await?;
    shutdown.cancel();
    background.join().await;
    Ok(())
}
