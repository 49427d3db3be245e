//! Helpers shared by the integration tests: everything talks to a MockKiro on 127.0.0.1:0.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use kiro_gateway::auth::{CredentialSettings, TokenConfig, TokenManager};
use kiro_gateway::config::Config;
use kiro_gateway::kiro::types::{
    ConversationState, CurrentMessage, GenerateAssistantRequest, UserInputMessage,
};
use kiro_gateway::kiro::{
    EndpointTemplates, HttpConfig, KiroClient, KiroClientConfig, KiroHeaders, UpstreamHttp,
};
use kiro_gateway::mock::MockConfig;
use kiro_gateway::mock::MockKiro;
use kiro_gateway::server::{serve, Gateway, ServeOptions};
use kiro_gateway::Secret;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub fn http() -> UpstreamHttp {
    UpstreamHttp::new(&HttpConfig::default()).expect("http client")
}

pub fn endpoints(mock: &MockKiro) -> EndpointTemplates {
    EndpointTemplates::all(&mock.url())
}

pub fn manager(mock: &MockKiro, settings: CredentialSettings, cfg: TokenConfig) -> TokenManager {
    TokenManager::load(
        &settings,
        &endpoints(mock),
        http(),
        KiroHeaders::new("test-fingerprint"),
        cfg,
    )
    .expect("token manager")
}

/// A manager on the bare REFRESH_TOKEN source with the mock's initial refresh token.
pub fn env_manager(mock: &MockKiro) -> TokenManager {
    manager(
        mock,
        CredentialSettings {
            refresh_token: Some(Secret::new(mock.config().initial_refresh_token.clone())),
            ..Default::default()
        },
        TokenConfig::default(),
    )
}

pub fn client(mock: &MockKiro) -> KiroClient {
    let mut cfg = KiroClientConfig::new(mock.url());
    cfg.headers = KiroHeaders::new("test-fingerprint");
    KiroClient::new(http(), cfg)
}

pub fn simple_body(content: &str, profile_arn: Option<String>) -> Bytes {
    let req = GenerateAssistantRequest {
        conversation_state: ConversationState {
            conversation_id: "7d0e8c1a-0000-4000-8000-000000000001".into(),
            chat_trigger_type: "MANUAL".into(),
            current_message: CurrentMessage {
                user_input_message: UserInputMessage {
                    content: content.into(),
                    model_id: "claude-sonnet-4.5".into(),
                    origin: "AI_EDITOR".into(),
                    ..Default::default()
                },
            },
            history: vec![],
        },
        profile_arn,
        additional_model_request_fields: None,
    };
    Bytes::from(serde_json::to_vec(&req).unwrap())
}

// ---------------------------------------------------------------------------------------------
// the bundled server on 127.0.0.1:0 in front of a mock

pub struct Running {
    pub addr: SocketAddr,
    pub mock: MockKiro,
    pub gateway: Gateway,
    pub shutdown: CancellationToken,
    pub http: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    /// Set by tests that send the mock broken requests on purpose.
    pub expect_rejections: std::sync::atomic::AtomicBool,
}

impl Drop for Running {
    /// Also checks that every request the test sent reached the mock well formed (the mock
    /// refuses what the service would, spec 3.2), unless the test said it sends broken ones.
    fn drop(&mut self) {
        self.shutdown.cancel();
        let rejected = self.mock.rejections();
        if !std::thread::panicking()
            && !self
                .expect_rejections
                .load(std::sync::atomic::Ordering::Relaxed)
            && !rejected.is_empty()
        {
            panic!("the mock refused requests as the service would: {rejected:?}");
        }
    }
}

pub async fn start_with(mock_cfg: MockConfig, tweak: impl FnOnce(&mut Config)) -> Running {
    let mock = MockKiro::start(mock_cfg).await.unwrap();
    let mut cfg = Config {
        proxy_api_key: "test-key".into(),
        retry_base_delay_ms: 10,
        retry_max_delay_ms: 50,
        ..Default::default()
    };
    cfg.use_mock(&mock);
    tweak(&mut cfg);
    let gw = Gateway::from_config(&cfg.validate().unwrap()).unwrap();
    // tolerated: some tests point the API at nothing
    let _ = gw.refresh_models().await;
    let served = serve_on_loopback(&gw, ServeOptions::default()).await;
    Running {
        addr: served.addr,
        mock,
        gateway: gw,
        shutdown: served.shutdown,
        http: http_client(),
        expect_rejections: Default::default(),
    }
}

/// The gateway in front of a mock on a JSON credentials file `path` (`KIRO_CREDS_FILE`)
/// instead of the mock's `REFRESH_TOKEN`; `tweak` adjusts the rest.
pub async fn start_on_creds_file(
    mock_cfg: MockConfig,
    path: &std::path::Path,
    tweak: impl FnOnce(&mut Config),
) -> Running {
    let path = path.to_path_buf();
    start_with(mock_cfg, move |c: &mut Config| {
        c.refresh_token = None;
        c.kiro_creds_file = Some(path);
        tweak(c);
    })
    .await
}

/// A gateway's router served on 127.0.0.1:0 until `shutdown` is cancelled.
pub struct Served {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Serve `gw` on a free loopback port with `opts` (the bundled server's accept loop).
pub async fn serve_on_loopback(gw: &Gateway, opts: ServeOptions) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(
        listener,
        gw.router(),
        shutdown.clone(),
        gw.parts.translate.close_streams.clone(),
        opts,
    ));
    Served {
        addr,
        shutdown,
        task,
    }
}

/// A plain HTTP/1 client for talking to a gateway on loopback.
pub fn http_client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

pub async fn start() -> Running {
    start_with(MockConfig::default(), |_| {}).await
}

/// The `data:` payloads of an SSE body, parsed (a non-JSON payload such as `[DONE]` as a
/// string).
pub fn sse_payloads(body: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|_| serde_json::json!(d)))
        .collect()
}

impl Running {
    /// The body of the last `generateAssistantResponse` request the mock received.
    pub fn last_generate(&self) -> serde_json::Value {
        self.mock
            .requests_to("/generateAssistantResponse")
            .last()
            .expect("a generate call")
            .body
            .clone()
    }

    pub fn req(&self, method: &str, path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("authorization", "Bearer test-key")
            .header("content-type", "application/json")
            .body(Full::new(body.into()))
            .unwrap()
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> (StatusCode, http::HeaderMap, Bytes) {
        let resp = self.http.request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => Bytes::new(),
        };
        (parts.status, parts.headers, bytes)
    }

    pub async fn chat(&self, body: Value) -> (StatusCode, http::HeaderMap, Bytes) {
        self.send(self.req("POST", "/v1/chat/completions", body.to_string()))
            .await
    }
}

/// Sum of the samples of the Prometheus metric `name` in `text` whose labels include all of
/// `want` (NaN when there is none).
pub fn sample(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    let mut seen = false;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
            match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            }
        } else if let Some(v) = rest.strip_prefix(' ') {
            ("", v)
        } else {
            continue;
        };
        let has = |k: &str, v: &str| labels.contains(&format!("{k}=\"{v}\""));
        if want.iter().all(|(k, v)| has(k, v)) {
            total += value.trim().parse::<f64>().unwrap();
            seen = true;
        }
    }
    if !seen {
        return f64::NAN;
    }
    total
}

/// A kiro-cli SQLite database at `path` holding `token` (OIDC) and the mock's device
/// registration.
pub fn make_cli_db(path: &std::path::Path, token: Value) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("CREATE TABLE auth_kv (key TEXT PRIMARY KEY, value TEXT)")
        .unwrap();
    conn.execute(
        "INSERT INTO auth_kv VALUES (?1, ?2)",
        ["kirocli:odic:token", &token.to_string()],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO auth_kv VALUES (?1, ?2)",
        [
            "kirocli:odic:device-registration",
            &serde_json::json!({"client_id": "mock-client-id", "client_secret": "mock-client-secret", "region": "us-east-1"}).to_string(),
        ],
    )
    .unwrap();
}

/// The OIDC token row of a kiro-cli database.
pub fn cli_token(path: &std::path::Path) -> Value {
    let conn = rusqlite::Connection::open(path).unwrap();
    let text: String = conn
        .query_row(
            "SELECT value FROM auth_kv WHERE key = 'kirocli:odic:token'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The gateway binary run in `dir` with a clean environment (only `PATH`, and `HOME` = `dir`)
/// and no stdin: no `.env`, `config.toml` or credentials of the machine's user reach it.
pub fn binary_in(dir: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kiro-gateway"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .current_dir(dir)
        .stdin(std::process::Stdio::null());
    cmd
}

/// The gateway binary on a Kiro IDE credentials file `creds` and `mock`, run in `dir` with a
/// clean environment: only these settings, `key` as its client key, a free port, stdout
/// piped for [`listening_url`].
pub fn binary_on_creds_file(
    dir: &std::path::Path,
    creds: &std::path::Path,
    mock: &MockKiro,
    key: &str,
) -> std::process::Command {
    use std::process::Stdio;
    let mut cmd = binary_in(dir);
    cmd.env("KIRO_CREDS_FILE", creds)
        .env("KIRO_API_URL", mock.url())
        .env("KIRO_MANAGEMENT_URL", mock.url())
        .env("KIRO_DESKTOP_AUTH_URL", mock.url())
        .env("KIRO_OIDC_URL", mock.url())
        .env("PROXY_API_KEY", key)
        .env("SERVER_PORT", "0")
        .env("FAKE_REASONING", "false")
        .env("LOG_LEVEL", "warning")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

/// The URL a gateway started from [`binary_on_creds_file`] prints when it listens (30 s at
/// most); its stdout is read on a thread until it closes.
pub fn listening_url(child: &mut std::process::Child) -> String {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("kiro-gateway listening on ") {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .expect("the gateway did not start")
}

/// An expiry `s` seconds from now (negative: in the past), in the credential files' format.
pub fn in_secs(s: i64) -> String {
    use std::time::{Duration, SystemTime};
    let t = if s >= 0 {
        SystemTime::now() + Duration::from_secs(s as u64)
    } else {
        SystemTime::now() - Duration::from_secs(s.unsigned_abs())
    };
    kiro_gateway::auth::source::format_expiry(t)
}

/// Write a JSON credentials file atomically, as the IDE would: readers never see half a file.
pub fn write_json(path: &std::path::Path, v: &Value) {
    let tmp = path.with_extension("ide-tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(v).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Poll `done` every 2 ms until it holds, for state a background task writes (a counter, a
/// debug file, a closed stream): no fixed sleep that is too short on a busy machine and too
/// long on an idle one. Fails naming `what` after `timeout`; returns how long it took.
pub async fn eventually(
    what: &str,
    timeout: std::time::Duration,
    mut done: impl FnMut() -> bool,
) -> std::time::Duration {
    let t0 = tokio::time::Instant::now();
    loop {
        if done() {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < timeout, "waited {timeout:?} for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// [`eventually`] for a condition that must itself await.
pub async fn eventually_async<F: std::future::Future<Output = bool>>(
    what: &str,
    timeout: std::time::Duration,
    mut done: impl FnMut() -> F,
) -> std::time::Duration {
    let t0 = tokio::time::Instant::now();
    loop {
        if done().await {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < timeout, "waited {timeout:?} for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// `kiro-auth-token.json` in `dir` holding `v`, written as the Kiro IDE would; its path.
pub fn creds_file(dir: &std::path::Path, v: Value) -> std::path::PathBuf {
    let path = dir.join("kiro-auth-token.json");
    write_json(&path, &v);
    path
}

/// A refresh through the mock's desktop endpoint, as the Kiro IDE does it behind the
/// gateway's back: `(access, refresh)`, or `None` when the mock refuses `refresh`.
pub async fn ide_refresh(mock: &MockKiro, refresh: &str) -> Option<(String, String)> {
    let req = Request::post(format!("{}/refreshToken", mock.url()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::json!({"refreshToken": refresh}).to_string(),
        )))
        .unwrap();
    let (status, _, body) = http().call_json(req).await.unwrap();
    if !status.is_success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    Some((
        v["accessToken"].as_str()?.to_owned(),
        v["refreshToken"].as_str()?.to_owned(),
    ))
}
