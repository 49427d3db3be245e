//! A mock Kiro upstream that speaks the real wire format, for tests, benches and the offline
//! demo. It only ever binds loopback addresses.
//!
//! It serves
//! - `POST /refreshToken` (Kiro desktop) and `POST /token` (AWS SSO OIDC), rotating the refresh
//!   token on every refresh and rejecting the old one;
//! - `GET /ListAvailableModels` (paged when `page_size` is set);
//! - `POST /generateAssistantResponse`, answering with real event-stream frames cut at random
//!   byte boundaries across writes, from a queue of scripted [`Reply`]s (or a default answer);
//! - the runtime protocol on `POST /`, dispatched on `x-amz-target`:
//!   `AmazonCodeWhispererStreamingService.GenerateAssistantResponse` (the same answers) and
//!   `AmazonCodeWhispererService.ListAvailableModels` (JSON body with `nextToken`); both refuse
//!   a body without `profileArn` with 400 `profileArn is required for this request.`;
//! - a Kiro API key ([`MockConfig::api_key`]) as the bearer when the call says
//!   `tokentype: API_KEY`; any other key gets the 403 of an invalid bearer;
//!
//! validates request bodies the way the service does (400 `Improperly formed request.`, 403 for
//! a dead token) and records every request it received.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use kiro_gateway::mock::{MockKiro, MockConfig, Reply, Script};
//! let mock = MockKiro::start(MockConfig::default()).await?;
//! mock.push_reply(Reply::Stream(Script::text("Hello!", 3)));
//! println!("upstream at {}", mock.url());
//! # Ok(()) }
//! ```

pub mod control;
pub mod script;
pub mod validate;

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use script::{Fault, MockEvent, Script};
use validate::Rejection;

use crate::lock;

type Body = BoxBody<Bytes, std::io::Error>;

/// Settings of the mock.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// The refresh token the mock accepts first.
    pub initial_refresh_token: String,
    /// The access token the mock accepts before any refresh (`None`: none is valid).
    pub initial_access_token: Option<String>,
    /// `expiresIn` of issued tokens, in seconds.
    pub expires_in: u64,
    /// Rotate the refresh token on every refresh (the old one is rejected afterwards).
    pub rotate_refresh_tokens: bool,
    /// OIDC client credentials the mock accepts on `/token`.
    pub oidc_client_id: String,
    pub oidc_client_secret: String,
    /// Profile ARN returned by the desktop refresh.
    pub profile_arn: String,
    /// Model ids served by ListAvailableModels and accepted in requests.
    pub models: Vec<String>,
    /// Models per ListAvailableModels page (0: all in one page).
    pub page_size: usize,
    /// Largest request body taken; larger ones get the service's 400
    /// `CONTENT_LENGTH_EXCEEDS_THRESHOLD` (0: no limit).
    pub max_request_bytes: usize,
    /// Extra members merged into a listed model's JSON, by model id (e.g. `tokenLimits` or
    /// `additionalModelRequestFieldsSchema`); replaces the defaults of the same name.
    pub model_fields: Vec<(String, Value)>,
    /// Delay of every refresh answer (to make concurrent refreshes overlap in tests).
    pub refresh_delay: Duration,
    /// A Kiro API key the mock accepts as a bearer sent with `tokentype: API_KEY`.
    pub api_key: Option<String>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            initial_refresh_token: "mock-refresh-0".into(),
            initial_access_token: None,
            expires_in: 3600,
            rotate_refresh_tokens: true,
            oidc_client_id: "mock-client-id".into(),
            oidc_client_secret: "mock-client-secret".into(),
            profile_arn: "arn:aws:codewhisperer:us-east-1:000000000000:profile/MOCKPROFILE".into(),
            models: [
                "auto",
                "claude-sonnet-4",
                "claude-sonnet-4.5",
                "claude-haiku-4.5",
                "claude-opus-4.5",
                "CLAUDE_3_7_SONNET_20250219_V1_0",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            page_size: 0,
            max_request_bytes: 615_000,
            model_fields: Vec::new(),
            refresh_delay: Duration::ZERO,
            api_key: None,
        }
    }
}

/// A scripted answer to one `generateAssistantResponse` request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// An HTTP error: status and JSON body.
    Status { status: u16, body: String },
    /// A 200 event stream.
    Stream(Script),
    /// An HTTP error with extra response headers (`x-amzn-ErrorType`, `Retry-After`, …).
    StatusWithHeaders {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
}

impl Reply {
    /// The service's 429 throttling answer.
    pub fn throttled() -> Self {
        Reply::Status {
            status: 429,
            body: r#"{"message":"Rate exceeded","reason":"USER_REQUEST_RATE_EXCEEDED"}"#.into(),
        }
    }

    /// A 5xx answer.
    pub fn server_error(status: u16) -> Self {
        Reply::Status {
            status,
            body: r#"{"message":"Encountered an unexpected error when processing the request, please try again.","reason":null}"#.into(),
        }
    }
}

/// A request the mock received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
    /// The bearer token, if any.
    pub token: Option<String>,
    /// Body parsed as JSON (`Null` when empty or not JSON).
    pub body: Value,
    pub body_len: usize,
}

#[derive(Debug, Default)]
struct Tokens {
    refresh: String,
    valid_access: HashSet<String>,
    /// Access tokens issued through OIDC (must not be combined with a profileArn).
    oidc_access: HashSet<String>,
    refresh_revoked: bool,
    serial: u64,
    /// `expiresIn` as sent in refresh answers, when a test overrides the configured one.
    expires_in_answer: Option<Value>,
}

/// Shared state of a running mock.
pub struct MockState {
    cfg: MockConfig,
    tokens: Mutex<Tokens>,
    replies: Mutex<VecDeque<Reply>>,
    default_reply: Mutex<Option<Script>>,
    recorded: Mutex<Vec<Recorded>>,
    desktop_refreshes: AtomicU64,
    oidc_refreshes: AtomicU64,
    generate_calls: AtomicU64,
    /// Requests refused by the spec 3.2 rules, with the rule each broke.
    rejections: Mutex<Vec<String>>,
    open_streams: Arc<AtomicU64>,
}

/// A running mock; dropping it stops the server and every connection it serves.
pub struct MockKiro {
    addr: SocketAddr,
    state: Arc<MockState>,
    task: JoinHandle<()>,
}

impl Drop for MockKiro {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockKiro {
    /// Start on `127.0.0.1:0`.
    pub async fn start(cfg: MockConfig) -> std::io::Result<Self> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).await
    }

    /// Start on a given loopback address.
    pub async fn bind(addr: SocketAddr, cfg: MockConfig) -> std::io::Result<Self> {
        if !addr.ip().is_loopback() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the mock Kiro upstream only binds loopback addresses",
            ));
        }
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let mut tokens = Tokens {
            refresh: cfg.initial_refresh_token.clone(),
            ..Default::default()
        };
        if let Some(a) = &cfg.initial_access_token {
            tokens.valid_access.insert(a.clone());
        }
        let state = Arc::new(MockState {
            cfg,
            tokens: Mutex::new(tokens),
            replies: Mutex::new(VecDeque::new()),
            default_reply: Mutex::new(None),
            recorded: Mutex::new(Vec::new()),
            desktop_refreshes: AtomicU64::new(0),
            oidc_refreshes: AtomicU64::new(0),
            generate_calls: AtomicU64::new(0),
            rejections: Mutex::new(Vec::new()),
            open_streams: Arc::new(AtomicU64::new(0)),
        });
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(MockKiro { addr, state, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the base URL for all three endpoints.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn config(&self) -> &MockConfig {
        &self.state.cfg
    }

    /// Queue a reply for the next `generateAssistantResponse` request.
    pub fn push_reply(&self, r: Reply) {
        lock(&self.state.replies).push_back(r);
    }

    /// Answer the next `n` generate requests with `status` and `body`.
    pub fn fail_next(&self, n: usize, status: u16, body: &str) {
        let mut q = lock(&self.state.replies);
        for _ in 0..n {
            q.push_back(Reply::Status {
                status,
                body: body.to_owned(),
            });
        }
    }

    /// The answer used when the queue is empty (`None`: an echo of the prompt).
    pub fn set_default_reply(&self, s: Option<Script>) {
        *lock(&self.state.default_reply) = s;
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.recorded).clone()
    }

    /// Requests received on one path (query ignored).
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.split('?').next() == Some(path))
            .collect()
    }

    pub fn desktop_refreshes(&self) -> u64 {
        self.state.desktop_refreshes.load(Ordering::SeqCst)
    }

    pub fn oidc_refreshes(&self) -> u64 {
        self.state.oidc_refreshes.load(Ordering::SeqCst)
    }

    /// The rules broken by the requests the mock refused as the service would (spec 3.2),
    /// in order; empty when every request was well formed.
    pub fn rejections(&self) -> Vec<String> {
        lock(&self.state.rejections).clone()
    }

    pub fn generate_calls(&self) -> u64 {
        self.state.generate_calls.load(Ordering::SeqCst)
    }

    /// Event-stream bodies currently being sent (drops to 0 when clients go away).
    pub fn open_streams(&self) -> u64 {
        self.state.open_streams.load(Ordering::SeqCst)
    }

    /// The refresh token the mock accepts now.
    pub fn current_refresh_token(&self) -> String {
        lock(&self.state.tokens).refresh.clone()
    }

    /// Invalidate every access token issued so far (the next API call gets 403).
    pub fn revoke_access_tokens(&self) {
        let mut t = lock(&self.state.tokens);
        t.valid_access.clear();
        t.oidc_access.clear();
    }

    /// Make every refresh fail as a revoked refresh token does.
    pub fn revoke_refresh_token(&self) {
        lock(&self.state.tokens).refresh_revoked = true;
    }

    /// Send this `expiresIn` in refresh answers from now on (any JSON value, e.g. `1e20`).
    pub fn set_expires_in_answer(&self, v: Value) {
        lock(&self.state.tokens).expires_in_answer = Some(v);
    }

    /// Accept this access token from now on.
    pub fn accept_access_token(&self, token: &str) {
        lock(&self.state.tokens)
            .valid_access
            .insert(token.to_owned());
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<MockState>) {
    // Connections live in this JoinSet: aborting the accept task drops it and ends them all.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(state, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn json_reply(status: StatusCode, v: Value) -> Response<Body> {
    full(status, v.to_string())
}

const BAD_TOKEN: &str =
    r#"{"message":"The bearer token included in the request is invalid.","reason":null}"#;
const MALFORMED: &str = r#"{"message":"Improperly formed request.","reason":null}"#;
const NO_PROFILE_ARN: &str = r#"{"message":"profileArn is required for this request."}"#;

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

async fn handle(state: Arc<MockState>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return full(StatusCode::BAD_REQUEST, MALFORMED),
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let token = bearer(&parts.headers);
    lock(&state.recorded).push(Recorded {
        method: parts.method.to_string(),
        path: path.clone(),
        headers: parts.headers.clone(),
        token: token.clone(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        body_len: body.len(),
    });
    let route = path.split('?').next().unwrap_or_default();
    match (&parts.method, route) {
        (&Method::POST, "/refreshToken") => refresh(&state, &body, false).await,
        (&Method::POST, "/token") => refresh(&state, &body, true).await,
        (&Method::GET, "/ListAvailableModels") => {
            if !token_ok(&state, token.as_deref(), &parts.headers) {
                return full(StatusCode::FORBIDDEN, BAD_TOKEN);
            }
            let start = path
                .split(['?', '&'])
                .find_map(|kv| kv.strip_prefix("nextToken="));
            list_models(&state, start)
        }
        (&Method::POST, "/") => runtime(&state, token.as_deref(), &parts.headers, &body).await,
        (&Method::POST, "/__mock/replies") => match control::parse_reply(&body) {
            Ok(r) => {
                lock(&state.replies).push_back(r);
                json_reply(
                    StatusCode::OK,
                    json!({"queued": lock(&state.replies).len()}),
                )
            }
            Err(e) => json_reply(StatusCode::BAD_REQUEST, json!({"message": e})),
        },
        (&Method::GET, "/__mock/requests") => {
            let list: Vec<Value> = lock(&state.recorded)
                .iter()
                .filter(|r| !r.path.starts_with("/__mock/"))
                .map(|r| json!({"method": r.method, "path": r.path, "body": r.body}))
                .collect();
            json_reply(StatusCode::OK, Value::Array(list))
        }
        (&Method::GET, "/__mock/rejections") => json_reply(
            StatusCode::OK,
            Value::Array(
                lock(&state.rejections)
                    .iter()
                    .map(|r| Value::String(r.clone()))
                    .collect(),
            ),
        ),
        (&Method::POST, "/__mock/reset") => {
            lock(&state.replies).clear();
            lock(&state.recorded).clear();
            json_reply(StatusCode::OK, json!({"reset": true}))
        }
        (&Method::POST, "/generateAssistantResponse") => {
            state.generate_calls.fetch_add(1, Ordering::SeqCst);
            generate(&state, token.as_deref(), &parts.headers, &body, false).await
        }
        _ => json_reply(
            StatusCode::NOT_FOUND,
            json!({"message": format!("mock Kiro has no route {} {route}", parts.method)}),
        ),
    }
}

async fn refresh(state: &MockState, body: &[u8], oidc: bool) -> Response<Body> {
    if !state.cfg.refresh_delay.is_zero() {
        tokio::time::sleep(state.cfg.refresh_delay).await;
    }
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
    let refused = |msg: &str| {
        if oidc {
            json_reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_grant", "error_description": msg}),
            )
        } else {
            json_reply(
                StatusCode::UNAUTHORIZED,
                json!({"message": msg, "reason": null}),
            )
        }
    };
    if oidc {
        state.oidc_refreshes.fetch_add(1, Ordering::SeqCst);
        if field("grantType") != "refresh_token" {
            return json_reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "unsupported_grant_type"}),
            );
        }
        if field("clientId") != state.cfg.oidc_client_id
            || field("clientSecret") != state.cfg.oidc_client_secret
        {
            return json_reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_client", "error_description": "Invalid client"}),
            );
        }
    } else {
        state.desktop_refreshes.fetch_add(1, Ordering::SeqCst);
    }
    let presented = field("refreshToken");
    let mut t = lock(&state.tokens);
    if t.refresh_revoked || presented.is_empty() || presented != t.refresh {
        return refused("Invalid refresh token provided");
    }
    t.serial += 1;
    let access = format!("mock-access-{}", t.serial);
    if state.cfg.rotate_refresh_tokens {
        t.refresh = format!("mock-refresh-{}", t.serial);
    }
    t.valid_access.insert(access.clone());
    if oidc {
        t.oidc_access.insert(access.clone());
    }
    let refresh = t.refresh.clone();
    let expires_in = t
        .expires_in_answer
        .clone()
        .unwrap_or_else(|| json!(state.cfg.expires_in));
    drop(t);
    if oidc {
        json_reply(
            StatusCode::OK,
            json!({"accessToken": access, "refreshToken": refresh,
                   "expiresIn": expires_in, "tokenType": "Bearer"}),
        )
    } else {
        json_reply(
            StatusCode::OK,
            json!({"accessToken": access, "refreshToken": refresh,
                   "expiresIn": expires_in, "profileArn": state.cfg.profile_arn}),
        )
    }
}

/// The bearer is valid: an issued access token, or (with `tokentype: API_KEY`) the
/// configured API key.
fn token_ok(state: &MockState, token: Option<&str>, headers: &HeaderMap) -> bool {
    let api_key = headers
        .get("tokentype")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"API_KEY"));
    if api_key {
        return matches!((token, &state.cfg.api_key), (Some(t), Some(k)) if t == k);
    }
    token.is_some_and(|t| lock(&state.tokens).valid_access.contains(t))
}

/// kiro-cli's protocol: `POST /` with the operation in `x-amz-target`.
async fn runtime(
    state: &MockState,
    token: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response<Body> {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match target {
        crate::kiro::client::TARGET_GENERATE => {
            state.generate_calls.fetch_add(1, Ordering::SeqCst);
            generate(state, token, headers, body, true).await
        }
        crate::kiro::client::TARGET_LIST_MODELS => {
            if !token_ok(state, token, headers) {
                return full(StatusCode::FORBIDDEN, BAD_TOKEN);
            }
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            if v.get("profileArn")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return full(StatusCode::BAD_REQUEST, NO_PROFILE_ARN);
            }
            list_models(state, v.get("nextToken").and_then(Value::as_str))
        }
        other => json_reply(
            StatusCode::BAD_REQUEST,
            json!({"__type": "UnknownOperationException",
                   "message": format!("mock Kiro has no operation {other:?}")}),
        ),
    }
}

/// One page of the model list, from the position `next_token` names.
fn list_models(state: &MockState, next_token: Option<&str>) -> Response<Body> {
    let start: usize = next_token.and_then(|n| n.parse().ok()).unwrap_or(0);
    let all = &state.cfg.models;
    let end = if state.cfg.page_size == 0 {
        all.len()
    } else {
        (start + state.cfg.page_size).min(all.len())
    };
    let models: Vec<Value> = all
        .get(start..end)
        .unwrap_or_default()
        .iter()
        .map(|id| {
            let mut m = json!({"modelId": id, "modelName": id, "description": "mock model",
                   "supportedInputTypes": ["TEXT", "IMAGE"],
                   "tokenLimits": {"maxInputTokens": 200000, "maxOutputTokens": 64000}});
            for (mid, extra) in &state.cfg.model_fields {
                if let (true, Some(obj), Some(extra)) =
                    (mid == id, m.as_object_mut(), extra.as_object())
                {
                    for (k, v) in extra {
                        obj.insert(k.clone(), v.clone());
                    }
                }
            }
            m
        })
        .collect();
    let mut answer = json!({"models": models, "defaultModel": {"modelId": "auto"}});
    if end < all.len() {
        answer["nextToken"] = Value::String(end.to_string());
    }
    json_reply(StatusCode::OK, answer)
}

/// `runtime`: the runtime protocol's rules (the profile ARN is mandatory for every account).
async fn generate(
    state: &MockState,
    token: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    runtime: bool,
) -> Response<Body> {
    // a scripted error status is answered before anything is checked (it stands for the
    // service failing); a scripted stream is only used by a request the service would accept
    {
        let mut q = lock(&state.replies);
        let scripted = match q.front() {
            Some(Reply::Status { status, body }) => Some((*status, Vec::new(), body.clone())),
            Some(Reply::StatusWithHeaders {
                status,
                headers,
                body,
            }) => Some((*status, headers.clone(), body.clone())),
            _ => None,
        };
        if let Some((status, headers, body)) = scripted {
            q.pop_front();
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = full(status, body);
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (
                    http::HeaderName::from_bytes(k.as_bytes()),
                    http::HeaderValue::from_str(&v),
                ) {
                    r.headers_mut().insert(k, v);
                }
            }
            return r;
        }
    }
    if !token_ok(state, token, headers) {
        return full(StatusCode::FORBIDDEN, BAD_TOKEN);
    }
    if state.cfg.max_request_bytes > 0 && body.len() > state.cfg.max_request_bytes {
        lock(&state.rejections).push(format!("body of {} bytes", body.len()));
        return full(
            StatusCode::BAD_REQUEST,
            r#"{"message":"Input is too long.","reason":"CONTENT_LENGTH_EXCEEDS_THRESHOLD"}"#,
        );
    }
    let req = match validate::validate(body, &state.cfg.models) {
        Ok(r) => r,
        Err(Rejection::Malformed(rule)) => {
            tracing::debug!(%rule, "mock Kiro rejected a request");
            lock(&state.rejections).push(rule);
            return full(StatusCode::BAD_REQUEST, MALFORMED);
        }
        Err(Rejection::InvalidModel(_)) => {
            return full(
                StatusCode::BAD_REQUEST,
                r#"{"message":"Invalid model. Please select a different model to continue.","reason":"INVALID_MODEL_ID"}"#,
            )
        }
    };
    if runtime && req.profile_arn.as_deref().is_none_or(str::is_empty) {
        return full(StatusCode::BAD_REQUEST, NO_PROFILE_ARN);
    }
    let oidc = token.is_some_and(|t| lock(&state.tokens).oidc_access.contains(t));
    // q.amazonaws.com refuses an ARN with an OIDC token (the reference's comment); the
    // runtime host wants one from everybody
    if !runtime && oidc && req.profile_arn.is_some() {
        return full(
            StatusCode::FORBIDDEN,
            r#"{"message":"User is not authorized to make this call.","reason":null}"#,
        );
    }
    let reply = lock(&state.replies).pop_front();
    let script = match reply {
        Some(Reply::Stream(s)) => s,
        _ => lock(&state.default_reply)
            .clone()
            .unwrap_or_else(|| echo_script(&req)),
    };
    stream_response(state, script).await
}

/// The default answer: a short greeting that quotes the prompt, so the demo shows a round trip.
fn echo_script(req: &crate::kiro::types::GenerateAssistantRequest) -> Script {
    let prompt = &req
        .conversation_state
        .current_message
        .user_input_message
        .content;
    let quoted: String = typed_text(prompt).chars().take(200).collect();
    Script::text(
        &format!(
            "Hello from the kiro-gateway demo upstream (an offline mock, not a real model). You said: {quoted}"
        ),
        12,
    )
}

/// The prompt without the reasoning request the gateway puts in front of it
/// (`<thinking_mode>…</thinking_mode>` and `<max_thinking_length>…</max_thinking_length>`):
/// the echo quotes what the user typed, not the tags the gateway added for the model.
fn typed_text(prompt: &str) -> &str {
    let mut rest = prompt.trim_start();
    for (open, close) in [
        ("<thinking_mode>", "</thinking_mode>"),
        ("<max_thinking_length>", "</max_thinking_length>"),
    ] {
        if let Some(after) = rest.strip_prefix(open) {
            match after.find(close) {
                Some(end) => rest = after[end + close.len()..].trim_start(),
                None => return prompt,
            }
        }
    }
    rest
}

/// Decrements the mock's open-stream gauge when the body is dropped (finished or abandoned).
struct StreamGuard(Arc<AtomicU64>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Sending state of one scripted body: the body itself, so dropping it stops everything.
struct Writer {
    frames: std::vec::IntoIter<Bytes>,
    index: usize,
    current: Bytes,
    reset_at: Option<usize>,
    reset_pending: bool,
    stalls: Vec<(usize, Duration)>,
    max_write: usize,
    pause: Duration,
    rng: rand::rngs::StdRng,
    started: bool,
    _guard: StreamGuard,
}

impl Writer {
    async fn next_piece(&mut self) -> Option<Result<Frame<Bytes>, std::io::Error>> {
        if self.started {
            if self.pause.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(self.pause).await;
            }
        }
        self.started = true;
        while self.current.is_empty() {
            if self.reset_pending {
                self.reset_pending = false;
                self.frames = Vec::new().into_iter();
                return Some(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "mock reset",
                )));
            }
            let frame = self.frames.next()?;
            let i = self.index;
            self.index += 1;
            for (at, p) in &self.stalls {
                if *at == i {
                    tokio::time::sleep(*p).await;
                }
            }
            if self.reset_at == Some(i) {
                self.current = frame.slice(..frame.len() / 2);
                self.reset_pending = true;
            } else {
                self.current = frame;
            }
        }
        let n = self
            .rng
            .random_range(1..=self.max_write)
            .min(self.current.len());
        Some(Ok(Frame::data(self.current.split_to(n))))
    }
}

async fn stream_response(state: &MockState, script: Script) -> Response<Body> {
    if let Some(d) = script.header_delay {
        tokio::time::sleep(d).await;
    }
    state.open_streams.fetch_add(1, Ordering::SeqCst);
    let writer = Writer {
        frames: script.frames().into_iter(),
        index: 0,
        current: Bytes::new(),
        reset_at: script.faults.iter().find_map(|f| match f {
            Fault::ResetAt(n) => Some(*n),
            _ => None,
        }),
        reset_pending: false,
        stalls: script
            .faults
            .iter()
            .filter_map(|f| match f {
                Fault::StallAt { frame, pause } => Some((*frame, *pause)),
                _ => None,
            })
            .collect(),
        max_write: script.max_write.max(1),
        pause: script.write_pause,
        rng: rand::rngs::StdRng::seed_from_u64(script.seed),
        started: false,
        _guard: StreamGuard(state.open_streams.clone()),
    };
    let stream = futures_util::stream::unfold(writer, |mut w| async move {
        w.next_piece().await.map(|item| (item, w))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/vnd.amazon.eventstream"),
    );
    r
}
