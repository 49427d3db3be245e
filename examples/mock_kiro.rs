//! The mock Kiro upstream as a standalone server, for trying the gateway by hand and for load
//! tests: `cargo run --example mock_kiro -- --port 9911`.
//!
//! Point the gateway at it with `KIRO_API_URL`, `KIRO_DESKTOP_AUTH_URL` and `KIRO_OIDC_URL` all
//! set to the printed URL and `REFRESH_TOKEN` set to the printed token.
//!
//! `--reasoning-schema MODEL` (repeatable) advertises an `additionalModelRequestFieldsSchema`
//! (thinking `enabled`/`adaptive` with a 1024–32000 budget, `output_config.effort`) for that
//! model, so the gateway uses native reasoning for it.

use std::net::SocketAddr;

use kiro_gateway::mock::{MockConfig, MockKiro};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port: u16 = 9911;
    let mut native: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" | "-p" => {
                port = args.next().ok_or("--port needs a value")?.parse()?;
            }
            "--reasoning-schema" => {
                native.push(args.next().ok_or("--reasoning-schema needs a model id")?);
            }
            "--help" | "-h" => {
                println!("usage: mock_kiro [--port PORT] [--reasoning-schema MODEL]...   (binds 127.0.0.1 only)");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let schema = serde_json::json!({"type": "object", "properties": {
        "thinking": {"type": "object", "properties": {
            "type": {"type": "string", "enum": ["enabled", "adaptive", "disabled"]},
            "budget_tokens": {"type": "integer", "minimum": 1024, "maximum": 32000}}},
        "output_config": {"type": "object", "properties": {
            "effort": {"type": "string", "enum": ["low", "medium", "high", "max"]}}}}});
    let cfg = MockConfig {
        model_fields: native
            .into_iter()
            .map(|m| {
                (
                    m,
                    serde_json::json!({"additionalModelRequestFieldsSchema": schema.clone()}),
                )
            })
            .collect(),
        ..Default::default()
    };
    let token = cfg.initial_refresh_token.clone();
    let mock = MockKiro::bind(SocketAddr::from(([127, 0, 0, 1], port)), cfg).await?;
    let url = mock.url();
    println!("mock Kiro listening on {url}");
    println!("  KIRO_API_URL={url} KIRO_DESKTOP_AUTH_URL={url} KIRO_OIDC_URL={url} REFRESH_TOKEN={token}");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
