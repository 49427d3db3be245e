//! The mock Kiro upstream as a standalone server, for trying the gateway by hand and for load
//! tests: `cargo run --example mock_kiro -- --port 9911`.
//!
//! Point the gateway at it with `KIRO_API_URL`, `KIRO_DESKTOP_AUTH_URL` and `KIRO_OIDC_URL` all
//! set to the printed URL and `REFRESH_TOKEN` set to the printed token.

use std::net::SocketAddr;

use kiro_gateway::mock::{MockConfig, MockKiro};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port: u16 = 9911;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" | "-p" => {
                port = args.next().ok_or("--port needs a value")?.parse()?;
            }
            "--help" | "-h" => {
                println!("usage: mock_kiro [--port PORT]   (binds 127.0.0.1 only)");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let cfg = MockConfig::default();
    let token = cfg.initial_refresh_token.clone();
    let mock = MockKiro::bind(SocketAddr::from(([127, 0, 0, 1], port)), cfg).await?;
    let url = mock.url();
    println!("mock Kiro listening on {url}");
    println!("  KIRO_API_URL={url} KIRO_DESKTOP_AUTH_URL={url} KIRO_OIDC_URL={url} REFRESH_TOKEN={token}");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
