//! The `kiro-gateway` binary itself: what it says and does on start.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn gateway(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiro-gateway"));
    // a clean environment and an empty working directory: no .env, no config.toml
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .current_dir(dir)
        .stdin(Stdio::null());
    c
}

#[test]
fn without_credentials_it_explains_the_four_ways_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let out = gateway(dir.path()).args(["--port", "0"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for s in [
        "KIRO_CREDS_FILE",
        "REFRESH_TOKEN",
        "KIRO_CLI_DB_FILE",
        "--demo",
    ] {
        assert!(err.contains(s), "{s} not in: {err}");
    }
}

#[test]
fn refuses_a_public_address_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = gateway(dir.path())
        .args(["--host", "0.0.0.0", "--port", "0", "--demo"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PROXY_API_KEY"));
}

#[test]
fn an_unknown_config_key_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "port = 0\nprxy_api_key = \"x\"\n",
    )
    .unwrap();
    let out = gateway(dir.path()).arg("--demo").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("prxy_api_key"));
}

#[test]
fn demo_starts_offline_and_prints_a_curl_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = gateway(dir.path())
        .args(["--demo", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut curl = None;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        if line.trim_start().starts_with("curl ") {
            curl = Some(line);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let curl = curl.expect("no curl line printed");
    assert!(curl.contains("http://127.0.0.1:"), "{curl}");
    assert!(curl.contains("/v1/chat/completions"), "{curl}");
}
