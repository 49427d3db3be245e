//! The `kiro-gateway` binary itself: what it says and does on start.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

#[test]
fn without_credentials_it_explains_the_four_ways_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::binary_in(dir.path())
        .args(["--port", "0"])
        .output()
        .unwrap();
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
    let out = common::binary_in(dir.path())
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
    let out = common::binary_in(dir.path())
        .arg("--demo")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("prxy_api_key"));
}

/// Lines of a child's pipe, read on a thread of their own.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// One HTTP/1.1 POST over a plain socket; the whole answer as text.
fn post(addr: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// What a new user does first: start the demo, paste the printed curl line. The answer quotes
/// what they typed, and nothing else: not the thinking tags the gateway adds for the model.
/// The start-up log has no warning in it (the demo's refresh token is not "lost on restart").
#[test]
fn demo_starts_offline_prints_a_curl_line_and_answers_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::binary_in(dir.path())
        .args(["--demo", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = lines_of(child.stdout.take().unwrap());
    let stderr = lines_of(child.stderr.take().unwrap());
    let mut curl = None;
    while let Ok(line) = stdout.recv_timeout(Duration::from_secs(20)) {
        if line.trim_start().starts_with("curl ") {
            curl = Some(line);
            break;
        }
    }
    let curl = curl.expect("no curl line printed");
    assert!(curl.contains("http://127.0.0.1:"), "{curl}");
    assert!(curl.contains("/v1/chat/completions"), "{curl}");
    let addr = curl
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_owned();
    let body = curl.split("-d '").nth(1).unwrap().trim_end_matches('\'');
    let answer = post(&addr, "/v1/chat/completions", body);
    let _ = child.kill();
    let _ = child.wait();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let json: serde_json::Value =
        serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(
        json["choices"][0]["message"]["content"],
        "Hello from the kiro-gateway demo upstream (an offline mock, not a real model). You said: Hello"
    );
    let logs: Vec<String> = stderr.try_iter().collect();
    assert!(
        logs.iter()
            .all(|l| !l.contains("WARN") && !l.contains("rotated")),
        "{logs:#?}"
    );
    assert!(logs.iter().any(|l| l.contains("listening")), "{logs:#?}");
}
