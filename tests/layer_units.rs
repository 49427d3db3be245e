//! Every layer alone, over a `tower::service_fn` (no server, no socket, no mock upstream),
//! through the crate's public API only: what a user who mounts one layer in their own stack
//! gets. Each test asserts exact statuses, error codes, messages and header values.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use kiro_gateway::accounts::{Account, AccountPool, PoolConfig, Strategy};
use kiro_gateway::api::anthropic::MessagesRequest;
use kiro_gateway::api::openai::{ChatCompletionRequest, OpenAiChat};
use kiro_gateway::api::thinking::ThinkingDefaults;
use kiro_gateway::auth::{CredentialSettings, TokenConfig, TokenManager};
use kiro_gateway::body::Body;
use kiro_gateway::context::{BodySize, ClientName, RawBody, RequestRecord, RetryCause};
use kiro_gateway::dialect::Dialect;
use kiro_gateway::error::{ErrorKind, GatewayError};
use kiro_gateway::kiro::{
    EndpointTemplates, Error as KiroError, Event, EventStream, GenerateRequest, GenerateResponse,
    KiroClientConfig, KiroHeaders, UpstreamStatus,
};
use kiro_gateway::layers::auth::ClientKey;
use kiro_gateway::layers::capture::{CaptureConfig, DebugMode};
use kiro_gateway::layers::metrics::{Metrics, MetricsLayer};
use kiro_gateway::layers::{
    ApiKeyLayer, DebugCaptureLayer, DialectLayer, JsonBodyLayer, KiroAuthLayer, ModelNameLayer,
    RetryConfig, RetryLayer, TranslateConfig, TranslateLayer,
};
use kiro_gateway::mock::{MockEvent, Script};
use kiro_gateway::models::{ModelCatalog, ResolvedModel, UnknownModelPolicy};
use serde_json::{json, Value};
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

// ---------------------------------------------------------------------------------------------
// helpers

/// An inner service that answers 200 with `body`.
fn answers(
    body: &'static str,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
       + std::fmt::Debug
       + Clone
       + Send
       + 'static {
    tower::service_fn(move |_req: Request<Body>| async move {
        Ok::<_, Infallible>(Response::new(Body::from(body)))
    })
}

async fn bytes_of(resp: Response<Body>) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}

async fn json_of(resp: Response<Body>) -> Value {
    serde_json::from_slice(&bytes_of(resp).await).unwrap()
}

fn chat(model: &str, stream: bool) -> ChatCompletionRequest {
    serde_json::from_value(json!({"model": model, "stream": stream,
        "messages": [{"role": "user", "content": "Hello there"}]}))
    .unwrap()
}

/// An upstream status error, as the Kiro client reports it.
fn upstream(code: u16, body: &'static str) -> KiroError {
    KiroError::Status(Box::new(UpstreamStatus::from_parts(
        StatusCode::from_u16(code).unwrap(),
        &HeaderMap::new(),
        Bytes::from_static(body.as_bytes()),
    )))
}

/// A successful Kiro answer of one text event.
fn answer(text: &str) -> GenerateResponse {
    GenerateResponse {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        events: Box::pin(futures_util::stream::iter(vec![Ok(Event::Text {
            content: text.to_owned(),
        })])),
    }
}

/// The frames of a scripted Kiro answer as the wire carries them.
fn wire(script: Script) -> Bytes {
    let mut all = BytesMut::new();
    for f in script.end().frames() {
        all.extend_from_slice(&f);
    }
    all.freeze()
}

/// A Kiro service answering every call with `bytes` decoded as a real event stream; it keeps
/// the body of the last request it was sent.
fn kiro_answering(
    bytes: Bytes,
    sent: Arc<Mutex<Option<Bytes>>>,
) -> impl Service<GenerateRequest, Response = GenerateResponse, Error = KiroError, Future: Send>
       + Clone
       + Send
       + 'static {
    let cfg = KiroClientConfig::new("http://unused.invalid");
    tower::service_fn(move |req: GenerateRequest| {
        *sent.lock().unwrap() = Some(req.body.clone());
        let events = EventStream::new(Full::new(bytes.clone()), &cfg);
        async move {
            Ok::<_, KiroError>(GenerateResponse {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                events: Box::pin(events),
            })
        }
    })
}

// ---------------------------------------------------------------------------------------------
// ApiKeyLayer

fn key_request(headers: &[(&str, &str)], dialect: Option<Dialect>) -> Request<Body> {
    let mut b = Request::post("/v1/chat/completions");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut req = b.body(Body::empty()).unwrap();
    if let Some(d) = dialect {
        req.extensions_mut().insert(d);
    }
    req
}

#[tokio::test]
async fn api_key_is_accepted_in_each_header_form() {
    let svc = ApiKeyLayer::new(["sekret"]).layer(answers("served"));
    for headers in [
        [("authorization", "Bearer sekret")],
        [("authorization", "bearer sekret")],
        [("x-api-key", "sekret")],
        [("api-key", "sekret")],
    ] {
        let resp = svc
            .clone()
            .oneshot(key_request(&headers, None))
            .await
            .unwrap_or_else(|e| panic!("{headers:?}: {}", e.message()));
        assert_eq!(resp.status(), StatusCode::OK, "{headers:?}");
        assert_eq!(bytes_of(resp).await, "served");
    }
}

#[tokio::test]
async fn api_key_refusal_is_an_err_401_worded_for_the_marked_dialect() {
    let svc = ApiKeyLayer::new(["sekret"]).layer(answers("served"));
    for (dialect, headers, message) in [
        (
            Some(Dialect::OpenAi),
            &[("authorization", "Bearer wrong")][..],
            "Invalid or missing API key. Use Authorization: Bearer <key>.",
        ),
        (
            Some(Dialect::Anthropic),
            &[("x-api-key", "wrong")][..],
            "Invalid or missing API key. Use the x-api-key header or Authorization: Bearer.",
        ),
        (
            None,
            &[][..],
            "Invalid or missing API key. Use Authorization: Bearer <key> or the x-api-key header.",
        ),
    ] {
        let err = svc
            .clone()
            .oneshot(key_request(headers, dialect))
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(err.kind(), ErrorKind::Authentication);
        assert_eq!(err.code(), Some("invalid_api_key"));
        assert_eq!(err.message(), message, "{dialect:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn api_key_past_its_rate_limit_is_an_err_429_with_retry_after() {
    let svc = ApiKeyLayer::with_clients([ClientKey::new("ci", "k").with_rate_limit_per_minute(1)])
        .layer(answers("served"));
    let h = [("x-api-key", "k")];
    assert_eq!(
        svc.clone()
            .oneshot(key_request(&h, None))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let err = svc
        .clone()
        .oneshot(key_request(&h, None))
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(err.kind(), ErrorKind::RateLimit);
    assert_eq!(err.code(), Some("rate_limit_exceeded"));
    // one request a minute: the token is back in 60 s
    assert_eq!(err.retry_after(), Some(60));
    assert_eq!(
        err.message(),
        "the client key \"ci\" is limited to 1 requests a minute; retry in 60 s"
    );
    // rendered by the dialect layer, the hint is the client's Retry-After
    let resp = Dialect::OpenAi.error_response(&err);
    assert_eq!(resp.headers()["retry-after"], "60");
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(
        svc.oneshot(key_request(&h, None)).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn api_key_name_reaches_the_extensions_and_the_record() {
    let svc =
        ApiKeyLayer::with_clients([ClientKey::new("alice", "ka"), ClientKey::new("bob", "kb")])
            .layer(tower::service_fn(|req: Request<Body>| async move {
                let name = req.extensions().get::<ClientName>().unwrap().0.to_string();
                Ok::<_, Infallible>(Response::new(Body::from(name)))
            }));
    for (key, name) in [("ka", "alice"), ("kb", "bob")] {
        let record = RequestRecord::default();
        let mut req = key_request(&[("authorization", &format!("Bearer {key}"))], None);
        req.extensions_mut().insert(record.clone());
        let resp = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(bytes_of(resp).await, name);
        assert_eq!(record.client(), name);
    }
    // the layer's Debug names the keys, never their text
    let dbg = format!("{:?}", ApiKeyLayer::new(["sekret-value"]));
    assert!(dbg.contains("default") && !dbg.contains("sekret"), "{dbg}");
}

// ---------------------------------------------------------------------------------------------
// JsonBodyLayer

fn json_request(content_type: Option<&str>, body: impl Into<Bytes>) -> Request<Body> {
    let mut b = Request::post("/v1/messages");
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    b.body(Body::from(body.into())).unwrap()
}

/// Echoes what the layer handed down: the parsed body, the raw body and its size.
fn json_echo(
) -> impl Service<Request<Value>, Response = Response<Body>, Error = Infallible, Future: Send>
       + Clone
       + Send
       + 'static {
    tower::service_fn(|req: Request<Value>| async move {
        let raw = req.extensions().get::<RawBody>().unwrap().0.clone();
        let size = req.extensions().get::<BodySize>().unwrap().0;
        let v = json!({"parsed": req.body(), "raw": String::from_utf8_lossy(&raw), "size": size});
        Ok::<_, Infallible>(Response::new(Body::from(v.to_string())))
    })
}

#[tokio::test]
async fn json_body_reaches_the_inner_service_parsed_with_raw_body_and_size() {
    let svc = JsonBodyLayer::<Value>::new(1024).layer(json_echo());
    let text = r#"{"model":"m","n":3}"#;
    let resp = svc
        .oneshot(json_request(Some("application/json; charset=utf-8"), text))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v = json_of(resp).await;
    assert_eq!(v["parsed"], json!({"model": "m", "n": 3}));
    assert_eq!(v["raw"], text);
    assert_eq!(v["size"], text.len());
}

#[tokio::test]
async fn json_body_refusals_are_errs_400_413_415() {
    let svc = JsonBodyLayer::<Value>::new(64).layer(json_echo());
    let err = svc
        .clone()
        .oneshot(json_request(Some("application/json"), "{not json"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert!(
        err.message()
            .starts_with("the request body is not valid JSON: "),
        "{}",
        err.message()
    );

    let err = svc
        .clone()
        .oneshot(json_request(
            None,
            format!("{{\"a\":\"{}\"}}", "x".repeat(100)),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        err.message(),
        "request body exceeds the gateway's limit of 64 bytes (MAX_BODY_BYTES)"
    );

    let err = svc
        .oneshot(json_request(Some("text/plain"), "{}"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        err.message(),
        "unsupported content type \"text/plain\": send the body as JSON with Content-Type: application/json"
    );
}

// ---------------------------------------------------------------------------------------------
// DebugCaptureLayer

fn capture_request(body: &'static str) -> Request<Value> {
    let mut req = Request::post("/v1/chat/completions")
        .header("x-request-id", "req-42")
        .body(serde_json::from_str::<Value>(body).unwrap())
        .unwrap();
    req.extensions_mut()
        .insert(RawBody(Bytes::from_static(body.as_bytes())));
    req.extensions_mut().insert(Dialect::OpenAi);
    req
}

fn capture_folders(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.'));
    v
}

#[tokio::test]
async fn debug_capture_off_writes_nothing_and_takes_the_raw_body_out() {
    let dir = tempfile::tempdir().unwrap();
    let svc = DebugCaptureLayer::new(CaptureConfig {
        mode: DebugMode::Off,
        dir: dir.path().to_owned(),
        keep: 10,
    })
    .layer(tower::service_fn(|req: Request<Value>| async move {
        // the raw copy is not held below the capture layer
        let raw = req.extensions().get::<RawBody>().is_some();
        Ok::<_, Infallible>(Response::new(Body::from(format!("raw below: {raw}"))))
    }));
    let resp = svc.oneshot(capture_request(r#"{"a":1}"#)).await.unwrap();
    assert_eq!(bytes_of(resp).await, "raw below: false");
    // the folder would be written on the blocking pool: give it every chance to appear
    tokio::task::spawn_blocking(|| ()).await.unwrap();
    assert!(capture_folders(dir.path()).is_empty());
}

#[tokio::test]
async fn debug_capture_all_writes_a_folder_with_the_request_body() {
    let dir = tempfile::tempdir().unwrap();
    let svc = DebugCaptureLayer::new(CaptureConfig {
        mode: DebugMode::All,
        dir: dir.path().to_owned(),
        keep: 10,
    })
    .layer(tower::service_fn(|_req: Request<Value>| async {
        Ok::<_, Infallible>(Response::new(Body::from("the answer")))
    }));
    let resp = svc
        .oneshot(capture_request(r#"{"question":"why"}"#))
        .await
        .unwrap();
    assert_eq!(bytes_of(resp).await, "the answer");
    common::eventually("the capture folder", Duration::from_secs(10), || {
        capture_folders(dir.path()).len() == 1
    })
    .await;
    let folder = &capture_folders(dir.path())[0];
    assert!(folder.to_string_lossy().ends_with("_req-42"), "{folder:?}");
    let body: Value =
        serde_json::from_slice(&std::fs::read(folder.join("request_body.json")).unwrap()).unwrap();
    assert_eq!(body, json!({"question": "why"}));
    assert_eq!(
        std::fs::read_to_string(folder.join("response_stream_modified.txt")).unwrap(),
        "the answer"
    );
    assert!(!folder.join("error_info.json").exists());
}

#[tokio::test]
async fn debug_capture_records_an_err_from_below_and_passes_it_up_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let svc = DebugCaptureLayer::new(CaptureConfig {
        mode: DebugMode::Errors,
        dir: dir.path().to_owned(),
        keep: 10,
    })
    .layer(tower::service_fn(|_req: Request<Value>| async {
        Err::<Response<Body>, _>(
            GatewayError::invalid_request("messages must not be empty")
                .with_param("messages")
                .with_code("empty_messages"),
        )
    }));
    let err = svc
        .oneshot(capture_request(r#"{"messages":[]}"#))
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    assert_eq!(err.message(), "messages must not be empty");
    assert_eq!(err.param(), Some("messages"));
    assert_eq!(err.code(), Some("empty_messages"));
    common::eventually("the capture folder", Duration::from_secs(10), || {
        capture_folders(dir.path()).len() == 1
    })
    .await;
    let folder = &capture_folders(dir.path())[0];
    let info: Value =
        serde_json::from_slice(&std::fs::read(folder.join("error_info.json")).unwrap()).unwrap();
    assert_eq!(
        info,
        json!({"status_code": 400, "error_message": "messages must not be empty"})
    );
    // what the client got, in the marked dialect
    let client: Value = serde_json::from_slice(
        &std::fs::read(folder.join("response_stream_modified.txt")).unwrap(),
    )
    .unwrap();
    assert_eq!(client["error"]["code"], "empty_messages");
    assert_eq!(client["error"]["param"], "messages");
}

// ---------------------------------------------------------------------------------------------
// ModelNameLayer

#[tokio::test]
async fn model_name_layer_inserts_the_resolved_model() {
    let catalog = Arc::new(ModelCatalog::new(
        Duration::from_secs(3600),
        UnknownModelPolicy::Nearest,
    ));
    let svc = ModelNameLayer::new(catalog).layer(tower::service_fn(
        |req: Request<ChatCompletionRequest>| async move {
            let m = req.extensions().get::<ResolvedModel>().unwrap().clone();
            Ok::<_, Infallible>(Response::new(Body::from(format!(
                "{}|{}",
                m.requested, m.kiro_id
            ))))
        },
    ));
    let resp = svc
        .oneshot(Request::new(chat("claude-sonnet-4-5", false)))
        .await
        .unwrap();
    assert_eq!(bytes_of(resp).await, "claude-sonnet-4-5|claude-sonnet-4.5");
}

#[tokio::test]
async fn model_name_layer_refuses_an_unknown_family_with_model_not_found() {
    let catalog = Arc::new(ModelCatalog::new(
        Duration::from_secs(3600),
        UnknownModelPolicy::Nearest,
    ));
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let svc = ModelNameLayer::new(catalog).layer(tower::service_fn(
        move |_req: Request<ChatCompletionRequest>| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Body::empty())) }
        },
    ));
    let err = svc
        .oneshot(Request::new(chat("gpt-4o", false)))
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert_eq!(err.code(), Some("model_not_found"));
    assert_eq!(err.param(), Some("model"));
    assert!(
        err.message()
            .starts_with("The model \"gpt-4o\" is not available through this Kiro account."),
        "{}",
        err.message()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------------
// DialectLayer

fn failing() -> impl Service<Request<Body>, Response = Response<Body>, Error = GatewayError> + Clone
{
    tower::service_fn(|_req: Request<Body>| async {
        Err::<Response<Body>, _>(
            GatewayError::invalid_request("max_tokens must be positive").with_param("max_tokens"),
        )
    })
}

#[tokio::test]
async fn dialect_layer_renders_an_err_in_each_dialect() {
    let resp = DialectLayer::new(Dialect::OpenAi)
        .layer(failing())
        .oneshot(Request::new(Body::empty()))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["x-should-retry"], "false");
    assert_eq!(
        json_of(resp).await,
        json!({"error": {"message": "max_tokens must be positive", "type": "invalid_request_error",
            "param": "max_tokens", "code": null}})
    );

    let resp = DialectLayer::new(Dialect::Anthropic)
        .layer(failing())
        .oneshot(Request::new(Body::empty()))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(resp).await,
        json!({"type": "error", "error": {"type": "invalid_request_error",
            "message": "max_tokens must be positive"}})
    );
}

#[tokio::test]
async fn dialect_layer_marks_the_request_below() {
    let seen = tower::service_fn(|r: Request<Body>| async move {
        let d = r.extensions().get::<Dialect>().map(|d| d.as_str());
        Ok::<_, GatewayError>(Response::new(Body::from(d.unwrap_or("none"))))
    });
    for (layer, headers, want) in [
        (DialectLayer::new(Dialect::Anthropic), vec![], "anthropic"),
        (DialectLayer::new(Dialect::OpenAi), vec![], "openai"),
        (
            DialectLayer::guess(),
            vec![("anthropic-version", "2023-06-01")],
            "anthropic",
        ),
        (DialectLayer::guess(), vec![], "openai"),
    ] {
        let mut b = Request::get("/v1/models");
        for (k, v) in headers {
            b = b.header(k, v);
        }
        let resp = layer
            .layer(seen)
            .oneshot(b.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(bytes_of(resp).await, want);
    }
}

/// A service whose `poll_ready` fails once, then serves.
#[derive(Clone)]
struct NotReadyOnce(bool);

impl Service<Request<Body>> for NotReadyOnce {
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = std::future::Ready<Result<Response<Body>, GatewayError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        if std::mem::replace(&mut self.0, false) {
            Poll::Ready(Err(GatewayError::new(
                ErrorKind::Overloaded,
                "no capacity left",
            )))
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, _req: Request<Body>) -> Self::Future {
        std::future::ready(Ok(Response::new(Body::from("served"))))
    }
}

#[tokio::test]
async fn dialect_layer_answers_a_poll_ready_failure() {
    let mut svc = DialectLayer::new(Dialect::Anthropic).layer(NotReadyOnce(true));
    // ready at once (the failure is kept for the call), never left pending
    let ready = futures_util::FutureExt::now_or_never(svc.ready());
    let resp = ready
        .expect("the failed poll_ready is reported as ready")
        .unwrap()
        .call(Request::new(Body::empty()))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        json_of(resp).await,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "no capacity left"}})
    );
    // the failure answered one call; the next is served
    let resp = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(Body::empty()))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!svc.get_ref().0);
}

// ---------------------------------------------------------------------------------------------
// TranslateLayer

/// Translation with no fake reasoning (`FAKE_REASONING=false`): the prompt goes down as sent.
fn plain() -> TranslateConfig {
    TranslateConfig {
        thinking: ThinkingDefaults {
            enabled: false,
            budget: 0,
        },
        ..Default::default()
    }
}

fn resolved(req: ChatCompletionRequest) -> Request<ChatCompletionRequest> {
    let mut req = Request::new(req);
    req.extensions_mut()
        .insert(ResolvedModel::unknown("claude-sonnet-4.5"));
    req
}

#[tokio::test]
async fn translate_answers_a_non_stream_request_with_the_folded_json() {
    let sent = Arc::new(Mutex::new(None));
    let bytes = wire(
        Script::new()
            .metadata()
            .event(MockEvent::Text("Hello, ".into()))
            .event(MockEvent::Text("world.".into())),
    );
    let svc = TranslateLayer::<OpenAiChat>::new(plain()).layer(kiro_answering(bytes, sent.clone()));
    let resp = svc
        .oneshot(resolved(chat("claude-sonnet-4-5", false)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-kiro-model"], "claude-sonnet-4.5");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v = json_of(resp).await;
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello, world.");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // what went down is the Kiro request for the resolved model
    let sent: Value = serde_json::from_slice(&sent.lock().unwrap().clone().unwrap()).unwrap();
    let current = &sent["conversationState"]["currentMessage"]["userInputMessage"];
    assert_eq!(current["modelId"], "claude-sonnet-4.5");
    assert_eq!(current["content"], "Hello there");
}

#[tokio::test]
async fn translate_answers_a_stream_request_with_sse() {
    let bytes = wire(
        Script::new()
            .metadata()
            .event(MockEvent::Text("one ".into()))
            .event(MockEvent::Text("two".into())),
    );
    let svc =
        TranslateLayer::<OpenAiChat>::new(plain()).layer(kiro_answering(bytes, Arc::default()));
    let resp = svc
        .oneshot(resolved(chat("claude-sonnet-4-5", true)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-kiro-model"], "claude-sonnet-4.5");
    let events = common::sse_payloads(&bytes_of(resp).await);
    assert_eq!(events.last(), Some(&json!("[DONE]")));
    let chunks = &events[..events.len() - 1];
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "one two");
    let finish: Vec<_> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["stop"]);
}

#[tokio::test]
async fn translate_without_a_resolved_model_is_an_err_500_naming_model_name_layer() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let svc = TranslateLayer::<OpenAiChat>::new(TranslateConfig::default()).layer(
        tower::service_fn(move |_req: GenerateRequest| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, KiroError>(answer("never")) }
        }),
    );
    let err = svc
        .oneshot(Request::new(chat("claude-sonnet-4-5", false)))
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(err.code(), Some("gateway_misconfigured"));
    assert_eq!(
        err.message(),
        "the gateway's layers are stacked wrongly: the resolved model (ResolvedModel) is missing from the request; mount ModelNameLayer above this layer"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------------
// RetryLayer

#[tokio::test(start_paused = true)]
async fn retry_a_429_then_success_is_two_calls_and_a_throttle_retry_recorded() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let svc = RetryLayer::new(RetryConfig::default()).layer(tower::service_fn(
        move |req: GenerateRequest| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                assert_eq!(req.attempt, n + 1);
                if n == 0 {
                    Err(upstream(429, r#"{"message":"Rate exceeded"}"#))
                } else {
                    Ok(answer("after the wait"))
                }
            }
        },
    ));
    let record = RequestRecord::default();
    let mut req = GenerateRequest::new(Bytes::from_static(b"{}"));
    req.extensions.insert(record.clone());
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(record.retries(RetryCause::Throttle), 1);
    assert_eq!(record.retries(RetryCause::ServerError), 0);
    let first = futures_util::StreamExt::collect::<Vec<_>>(resp.events).await;
    assert!(
        matches!(&first[..], [Ok(Event::Text { content })] if content == "after the wait"),
        "{first:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_passes_a_400_up_after_one_call() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let svc = RetryLayer::new(RetryConfig::default()).layer(tower::service_fn(
        move |_req: GenerateRequest| {
            c.fetch_add(1, Ordering::SeqCst);
            async {
                Err::<GenerateResponse, _>(upstream(
                    400,
                    r#"{"message":"Improperly formed request."}"#,
                ))
            }
        },
    ));
    let record = RequestRecord::default();
    let mut req = GenerateRequest::new(Bytes::from_static(b"{}"));
    req.extensions.insert(record.clone());
    let err = svc.oneshot(req).await.err().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(
        matches!(&err, KiroError::Status(s) if s.status == StatusCode::BAD_REQUEST && s.message == "Improperly formed request."),
        "{err:?}"
    );
    assert!(RetryCause::ALL.iter().all(|c| record.retries(*c) == 0));
    assert_eq!(GatewayError::from(err).status(), StatusCode::BAD_REQUEST);
}

// ---------------------------------------------------------------------------------------------
// KiroAuthLayer

/// A token manager on a Kiro IDE credentials file holding a valid access token; no refresh
/// endpoint is ever reached (the endpoints point nowhere).
fn token_manager(dir: &std::path::Path, access: &str) -> (TokenManager, std::path::PathBuf) {
    let path = common::creds_file(
        dir,
        json!({"accessToken": access, "refreshToken": "refresh-1",
            "expiresAt": common::in_secs(3600)}),
    );
    let tokens = TokenManager::load(
        &CredentialSettings {
            creds_file: Some(path.clone()),
            ..Default::default()
        },
        &EndpointTemplates::all("http://127.0.0.1:9"),
        common::http(),
        KiroHeaders::new("layer-units"),
        TokenConfig::default(),
    )
    .unwrap();
    (tokens, path)
}

#[tokio::test]
async fn kiro_auth_sets_the_bearer_from_the_token_manager() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = token_manager(dir.path(), "access-from-file");
    let svc =
        KiroAuthLayer::new(tokens).layer(tower::service_fn(|req: GenerateRequest| async move {
            let token = req.token.as_ref().map(|t| t.expose().to_owned());
            Ok::<_, KiroError>(answer(&token.unwrap_or_default()))
        }));
    let record = RequestRecord::default();
    let mut req = GenerateRequest::new(Bytes::from_static(b"{}"));
    req.extensions.insert(record.clone());
    let resp = svc.oneshot(req).await.unwrap();
    let events = futures_util::StreamExt::collect::<Vec<_>>(resp.events).await;
    assert!(
        matches!(&events[..], [Ok(Event::Text { content })] if content == "access-from-file"),
        "{events:?}"
    );
    assert_eq!(record.attempts(), 1);
    // Debug names the source, never the token
    let dbg = format!(
        "{:?}",
        KiroAuthLayer::new(token_manager(dir.path(), "t-secret").0)
    );
    assert!(!dbg.contains("t-secret"), "{dbg}");
}

#[tokio::test]
async fn kiro_auth_an_invalid_token_403_forces_one_refresh_and_one_retry() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, path) = token_manager(dir.path(), "stale-token");
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let s = seen.clone();
    let svc = KiroAuthLayer::new(tokens).layer(tower::service_fn(move |req: GenerateRequest| {
        let token = req.token.as_ref().unwrap().expose().to_owned();
        s.lock().unwrap().push(token.clone());
        let path = path.clone();
        async move {
            if token == "stale-token" {
                // meanwhile the IDE refreshed and rewrote the file: the forced refresh takes
                // that token (under the file's lock) instead of calling the refresh endpoint
                common::write_json(
                    &path,
                    &json!({"accessToken": "fresh-token", "refreshToken": "refresh-1",
                        "expiresAt": common::in_secs(3600)}),
                );
                Err(upstream(
                    403,
                    r#"{"message":"The bearer token included in the request is invalid."}"#,
                ))
            } else {
                Ok(answer("ok"))
            }
        }
    }));
    let record = RequestRecord::default();
    let mut req = GenerateRequest::new(Bytes::from_static(b"{}"));
    req.extensions.insert(record.clone());
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(*seen.lock().unwrap(), ["stale-token", "fresh-token"]);
    assert_eq!(record.retries(RetryCause::InvalidToken), 1);
    assert_eq!(record.attempts(), 2);
}

// ---------------------------------------------------------------------------------------------
// AccountPool (the bottom of the stack: a Service of GenerateRequest over accounts)

#[tokio::test]
async fn account_pool_fails_over_a_throttle_to_the_other_account() {
    let calls = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
    let account = |i: usize, name: &str| {
        let calls = calls.clone();
        Account::new(
            name.to_owned(),
            BoxCloneSyncService::new(tower::service_fn(move |_req: GenerateRequest| {
                calls[i].fetch_add(1, Ordering::SeqCst);
                async move {
                    if i == 0 {
                        Err(upstream(429, r#"{"message":"Rate exceeded"}"#))
                    } else {
                        Ok(answer("from b"))
                    }
                }
            })),
        )
    };
    let pool = AccountPool::new(
        vec![account(0, "a"), account(1, "b")],
        PoolConfig {
            strategy: Strategy::Priority,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(pool.is_pooled());
    let record = RequestRecord::default();
    let mut req = GenerateRequest::new(Bytes::from_static(b"{}"));
    req.extensions.insert(record.clone());
    let resp = pool.clone().oneshot(req).await.unwrap();
    let events = futures_util::StreamExt::collect::<Vec<_>>(resp.events).await;
    assert!(
        matches!(&events[..], [Ok(Event::Text { content })] if content == "from b"),
        "{events:?}"
    );
    assert_eq!(calls[0].load(Ordering::SeqCst), 1);
    assert_eq!(calls[1].load(Ordering::SeqCst), 1);
    assert_eq!(&*record.account(), "b");
    assert_eq!(record.retries(RetryCause::Failover), 1);
    let states: Vec<_> = pool
        .snapshot()
        .iter()
        .map(|a| (a.name.clone(), a.state))
        .collect();
    assert_eq!(
        states,
        [("a".to_owned(), "cooling"), ("b".to_owned(), "ok")]
    );
}

// ---------------------------------------------------------------------------------------------
// MetricsLayer

#[tokio::test]
async fn metrics_layer_counts_a_request_with_its_status() {
    let metrics = Metrics::new();
    let svc = MetricsLayer::new(metrics.clone(), "/v1/messages", Dialect::Anthropic).layer(
        tower::service_fn(|req: Request<Body>| async move {
            let overloaded = req.uri().path() == "/busy";
            let mut resp = Response::new(Body::from("{}"));
            if overloaded {
                *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            Ok::<_, Infallible>(resp)
        }),
    );
    for path in ["/ok", "/busy", "/ok"] {
        let resp = svc
            .clone()
            .oneshot(Request::post(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        bytes_of(resp).await;
    }
    let text = metrics.render();
    let line = |status: &str| {
        format!(
            r#"kiro_gateway_requests_total{{route="/v1/messages",dialect="anthropic",model="unknown",status="{status}",account="default",client="none"}}"#
        )
    };
    let value = |status: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&line(status)))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no line for status {status} in\n{text}"))
            .to_owned()
    };
    assert_eq!(value("200"), "2");
    assert_eq!(value("503"), "1");
    assert_eq!(
        metrics
            .recent_failures()
            .first()
            .map(|f| (f.status, f.route)),
        Some((503, "/v1/messages"))
    );
}

// ---------------------------------------------------------------------------------------------
// the anatomy every layer shares

#[test]
fn every_layer_and_service_has_debug_and_inner_accessors() {
    fn debug<T: std::fmt::Debug>(t: &T) -> String {
        format!("{t:?}")
    }
    let inner = tower::service_fn(|_req: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::empty()))
    });
    let mut svc = ApiKeyLayer::new(["k"]).layer(inner);
    let _: &mut _ = svc.get_mut();
    let _ = svc.into_inner();
    let layer = JsonBodyLayer::<MessagesRequest>::new(10);
    assert!(debug(&layer).contains("limit: 10"));
    let svc = layer.layer(answers("x"));
    let _ = svc.get_ref();
    let svc = ModelNameLayer::new(Arc::new(ModelCatalog::new(
        Duration::from_secs(1),
        UnknownModelPolicy::Reject,
    )))
    .layer(answers("x"));
    let _ = svc.get_ref();
    let svc = DebugCaptureLayer::new(CaptureConfig::default()).layer(answers("x"));
    assert!(debug(&svc).contains("DebugCaptureService"));
    let svc = RetryLayer::new(RetryConfig::default()).layer(answers("x"));
    assert!(debug(&svc).contains("max_attempts: 3"));
    let _ = svc.into_inner();
    let svc = MetricsLayer::new(Metrics::new(), "/r", Dialect::OpenAi).layer(answers("x"));
    assert!(debug(&svc).contains("route: \"/r\""), "{}", debug(&svc));
    let svc = DialectLayer::new(Dialect::OpenAi).layer(answers("x"));
    let _ = svc.get_ref();
}

// ---------------------------------------------------------------------------------------------
// UpstreamCaptureLayer

#[tokio::test]
async fn upstream_capture_copies_the_kiro_events_and_a_failure_into_the_capture() {
    use kiro_gateway::context::CaptureHandle;
    use kiro_gateway::layers::UpstreamCaptureLayer;

    let dir = tempfile::tempdir().unwrap();
    let cfg = Arc::new(CaptureConfig {
        mode: DebugMode::All,
        dir: dir.path().to_owned(),
        keep: 10,
    });
    // an answer whose stream breaks after its first event
    let svc = UpstreamCaptureLayer::new().layer(tower::service_fn(|_req: GenerateRequest| async {
        Ok::<_, KiroError>(GenerateResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            events: Box::pin(futures_util::stream::iter(vec![
                Ok(Event::Text {
                    content: "half an answer".into(),
                }),
                Err(KiroError::Truncated),
            ])),
        })
    }));
    let handle = CaptureHandle::new("up-1".into(), Bytes::from_static(b"{}"), cfg);
    let mut req = GenerateRequest::new(Bytes::from_static(b"{}"));
    req.extensions.insert(handle.clone());
    let resp = svc.clone().oneshot(req).await.unwrap();
    let items: Vec<_> = futures_util::StreamExt::collect(resp.events).await;
    assert_eq!(items.len(), 2, "the events pass through unchanged");
    assert!(matches!(items[1], Err(KiroError::Truncated)));
    handle.finalize();
    common::eventually("the capture folder", Duration::from_secs(10), || {
        capture_folders(dir.path()).len() == 1
    })
    .await;
    let folder = &capture_folders(dir.path())[0];
    let raw = std::fs::read_to_string(folder.join("response_stream_raw.txt")).unwrap();
    let lines: Vec<Value> = raw
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        vec![
            json!({"assistantResponseEvent": {"content": "half an answer"}}),
            json!({"error": "the Kiro stream ended before the answer was complete"}),
        ]
    );
    let info: Value =
        serde_json::from_slice(&std::fs::read(folder.join("error_info.json")).unwrap()).unwrap();
    assert_eq!(info["status_code"], 502);

    // without a capture handle the request goes through untouched
    let resp = svc
        .oneshot(GenerateRequest::new(Bytes::from_static(b"{}")))
        .await
        .unwrap();
    let items: Vec<_> = futures_util::StreamExt::collect(resp.events).await;
    assert_eq!(items.len(), 2);
}
