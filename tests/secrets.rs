//! No secret ever reaches a log line (at TRACE), an error message or a debug file: a full run
//! with DEBUG_MODE=all over both credential flows and Kiro API keys (taken and refused), both
//! dialects, streams, refreshes after a 403 and failures, then every captured byte is searched
//! for every secret that was in play.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::start_with;
use kiro_gateway::mock::{Fault, MockConfig, Reply, Script};
use serde_json::json;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn all_files(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push((
                p.display().to_string(),
                String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned(),
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_errors_or_debug_files() {
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .init();
    let debug_dir = tempfile::tempdir().unwrap();
    let creds_dir = tempfile::tempdir().unwrap();
    let mut responses = String::new();
    // chat and messages requests sent, each captured in its own folder
    let mut api_requests = 0;

    // desktop flow from a credentials file, and the OIDC flow, each with DEBUG_MODE=all
    let desktop_file = creds_dir.path().join("kiro-auth-token.json");
    std::fs::write(&desktop_file, json!({"refreshToken": "mock-refresh-0", "accessToken": "stale-access-secret", "expiresAt": "2020-01-01T00:00:00Z"}).to_string()).unwrap();
    let oidc_file = creds_dir.path().join("sso.json");
    std::fs::write(&oidc_file, json!({"refreshToken": "mock-refresh-0", "clientId": "mock-client-id", "clientSecret": "mock-client-secret"}).to_string()).unwrap();
    for file in [desktop_file, oidc_file] {
        let dd = debug_dir.path().to_path_buf();
        let r = common::start_on_creds_file(MockConfig::default(), &file, move |c| {
            c.debug_mode = kiro_gateway::layers::DebugMode::All;
            c.debug_dir = dd;
            c.debug_keep = 1000;
            c.log_level = kiro_gateway::config::LogLevel::Trace;
            c.retry_base_delay_ms = 1;
        })
        .await;
        for stream in [false, true] {
            r.mock
                .push_reply(Reply::Stream(Script::text("<thinking>hm</thinking>ok", 3)));
            let (_, _, b) = r.chat(json!({"model": "claude-sonnet-4-5", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})).await;
            responses.push_str(&String::from_utf8_lossy(&b));
            api_requests += 1;
            r.mock.revoke_access_tokens(); // next call: 403, refresh, retry
            r.mock.push_reply(Reply::Stream(Script::text("again", 3)));
            let (_, _, b) = r
                .send(
                    r.req(
                        "POST",
                        "/v1/messages",
                        json!({"model": "claude-sonnet-4-5", "stream": stream, "max_tokens": 9,
                    "messages": [{"role": "user", "content": "hi"}]})
                        .to_string(),
                    ),
                )
                .await;
            responses.push_str(&String::from_utf8_lossy(&b));
            api_requests += 1;
            r.mock.push_reply(Reply::throttled());
            r.mock.push_reply(Reply::Stream(
                Script::text("broken", 3).fault(Fault::BadCrcAt(2)),
            ));
            let (_, _, b) = r.chat(json!({"model": "claude-sonnet-4-5", "stream": stream, "messages": [{"role": "user", "content": "x"}]})).await;
            responses.push_str(&String::from_utf8_lossy(&b));
            api_requests += 1;
        }
        // a wrong key and a revoked refresh token
        let mut bad = r.req("GET", "/v1/models", "");
        bad.headers_mut()
            .insert("authorization", "Bearer wrong-key-secret".parse().unwrap());
        let (_, _, b) = r.send(bad).await;
        responses.push_str(&String::from_utf8_lossy(&b));
        r.mock.revoke_access_tokens();
        r.mock.revoke_refresh_token();
        let (_, _, b) = r.chat(json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}]})).await;
        responses.push_str(&String::from_utf8_lossy(&b));
        api_requests += 1;
        let (_, _, b) = r.send(r.req("GET", "/health", "")).await;
        responses.push_str(&String::from_utf8_lossy(&b));
        assert!(
            r.mock.desktop_refreshes() + r.mock.oidc_refreshes() >= 2,
            "the refresh flows ran"
        );
    }
    // the API key source, on both protocols: a key the service takes and one it refuses
    for (key, protocol) in [
        ("ksk_secret_good_key", "q"),
        ("ksk_secret_revoked_key", "q"),
        ("ksk_secret_good_key", "runtime"),
    ] {
        let dd = debug_dir.path().to_path_buf();
        let mock = MockConfig {
            api_key: Some("ksk_secret_good_key".into()),
            ..Default::default()
        };
        let r = start_with(mock, move |c| {
            c.debug_mode = kiro_gateway::layers::DebugMode::All;
            c.debug_dir = dd;
            c.debug_keep = 1000;
            c.log_level = kiro_gateway::config::LogLevel::Trace;
            c.refresh_token = None;
            c.kiro_api_key = Some(key.into());
            c.kiro_api_protocol = protocol.parse().unwrap();
            c.profile_arn = Some("arn:aws:codewhisperer:us-east-1:1:profile/P".into());
        })
        .await;
        for stream in [false, true] {
            let (_, _, b) = r.chat(json!({"model": "claude-sonnet-4-5", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})).await;
            responses.push_str(&String::from_utf8_lossy(&b));
            api_requests += 1;
            let (_, _, b) = r
                .send(
                    r.req(
                        "POST",
                        "/v1/messages",
                        json!({"model": "claude-sonnet-4-5", "stream": stream, "max_tokens": 9,
                    "messages": [{"role": "user", "content": "hi"}]})
                        .to_string(),
                    ),
                )
                .await;
            responses.push_str(&String::from_utf8_lossy(&b));
            api_requests += 1;
        }
        let (_, _, b) = r.send(r.req("GET", "/health", "")).await;
        responses.push_str(&String::from_utf8_lossy(&b));
        assert!(
            r.mock.generate_calls() >= 4,
            "the API-key calls reached the mock"
        );
    }
    // debug files are written off the request path: wait for every request's folder (moved
    // into place whole, under a name without a leading dot)
    let folders = || {
        std::fs::read_dir(debug_dir.path())
            .unwrap()
            .filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count()
    };
    common::eventually(
        &format!("a debug capture folder for each of the {api_requests} API requests"),
        std::time::Duration::from_secs(5),
        || folders() == api_requests,
    )
    .await;
    let mut files = Vec::new();
    all_files(debug_dir.path(), &mut files);
    assert!(
        files.len() > 20,
        "debug capture wrote its files ({})",
        files.len()
    );
    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "logs were captured at a low level"
    );
    let mut haystacks = vec![
        ("logs".to_owned(), logs),
        ("responses".to_owned(), responses),
    ];
    haystacks.extend(files);
    let secrets = [
        "mock-access-",
        "mock-refresh-",
        "stale-access-secret",
        "mock-client-secret",
        "test-key",
        "wrong-key-secret",
        "ksk_secret_",
    ];
    for (name, text) in &haystacks {
        for s in secrets {
            assert!(!text.contains(s), "{s:?} found in {name}");
        }
    }
}
