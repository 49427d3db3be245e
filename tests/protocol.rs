//! The two wire protocols (q and runtime), the Kiro API key source, and the model catalogue,
//! end to end through the bundled server against the mock Kiro on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use kiro_gateway::config::Config;
use kiro_gateway::kiro::client::{TARGET_GENERATE, TARGET_LIST_MODELS};
use kiro_gateway::kiro::{Error, GenerateRequest, KiroClient, KiroClientConfig, KiroHeaders};
use kiro_gateway::mock::{MockConfig, MockKiro, Recorded, Reply, Script};
use kiro_gateway::server::Gateway;
use kiro_gateway::Secret;
use serde_json::{json, Value};
use tower::ServiceExt;

const ARN: &str = "arn:aws:codewhisperer:us-east-1:111122223333:profile/RUNTIMETEST";
const API_KEY: &str = "ksk_test_0123456789abcdef";

/// The mock's desktop refresh hands back this ARN too (a returned ARN replaces the stored one).
fn mock_cfg() -> MockConfig {
    MockConfig {
        profile_arn: ARN.into(),
        ..Default::default()
    }
}

fn runtime(c: &mut Config) {
    c.kiro_api_protocol = kiro_gateway::kiro::ApiProtocol::Runtime;
    c.profile_arn = Some(ARN.into());
}

fn header<'a>(r: &'a Recorded, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The upstream calls made with one `x-amz-target` on `POST /`.
fn runtime_calls(mock: &MockKiro, target: &str) -> Vec<Recorded> {
    mock.requests_to("/")
        .into_iter()
        .filter(|r| r.method == "POST" && header(r, "x-amz-target") == target)
        .collect()
}

fn assert_runtime_generate(r: &Recorded, model: &str) {
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/"));
    assert_eq!(header(r, "x-amz-target"), TARGET_GENERATE);
    assert_eq!(header(r, "content-type"), "application/x-amz-json-1.0");
    assert_eq!(header(r, "x-amzn-codewhisperer-optout"), "false");
    assert_eq!(r.body["profileArn"], ARN, "{}", r.body);
    let current = &r.body["conversationState"]["currentMessage"]["userInputMessage"];
    assert_eq!(current["origin"], "KIRO_CLI");
    assert_eq!(current["modelId"], model);
}

async fn anthropic(r: &Running, body: Value) -> (http::StatusCode, Value, String) {
    let mut req = r.req("POST", "/v1/messages", body.to_string());
    req.headers_mut()
        .insert("anthropic-version", "2023-06-01".parse().unwrap());
    let (status, _, bytes) = r.send(req).await;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text,
    )
}

// ---------------------------------------------------------------------------------------------
// the runtime protocol

#[tokio::test]
async fn runtime_openai_stream_and_non_stream_post_to_root_with_target_and_profile_arn() {
    let r = start_with(mock_cfg(), runtime).await;
    r.mock
        .push_reply(Reply::Stream(Script::text("Hello over runtime", 4)));
    r.mock.push_reply(Reply::Stream(Script::text(
        "A streamed runtime answer",
        100,
    )));
    let (status, _, bytes) = r
        .chat(
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello over runtime");
    let (status, _, bytes) = r
        .chat(json!({"model": "claude-haiku-4-5", "stream": true,
            "messages": [{"role": "user", "content": "stream please"}]}))
        .await;
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("runtime answer"), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let calls = runtime_calls(&r.mock, TARGET_GENERATE);
    assert_eq!(calls.len(), 2);
    assert_runtime_generate(&calls[0], "claude-sonnet-4.5");
    assert_runtime_generate(&calls[1], "claude-haiku-4.5");
    // nothing went to the q paths
    assert!(r.mock.requests_to("/generateAssistantResponse").is_empty());
    assert!(r.mock.requests_to("/ListAvailableModels").is_empty());
}

#[tokio::test]
async fn runtime_anthropic_stream_and_non_stream_post_to_root_with_target_and_profile_arn() {
    let r = start_with(mock_cfg(), runtime).await;
    r.mock
        .push_reply(Reply::Stream(Script::text("Hello over runtime", 4)));
    r.mock.push_reply(Reply::Stream(Script::text(
        "A streamed runtime answer",
        100,
    )));
    let (status, v, text) = anthropic(
        &r,
        json!({"model": "claude-sonnet-4-5-20250929", "max_tokens": 100,
            "messages": [{"role": "user", "content": "hello there"}]}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], "Hello over runtime", "{v}");
    let (status, _, text) = anthropic(
        &r,
        json!({"model": "claude-opus-4-5", "max_tokens": 100, "stream": true,
            "messages": [{"role": "user", "content": "streamed"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(text.contains("event: message_stop"), "{text}");
    assert!(text.contains("runtime answer"), "{text}");
    let calls = runtime_calls(&r.mock, TARGET_GENERATE);
    assert_eq!(calls.len(), 2);
    assert_runtime_generate(&calls[0], "claude-sonnet-4.5");
    assert_runtime_generate(&calls[1], "claude-opus-4.5");
}

#[tokio::test]
async fn runtime_model_list_follows_next_token_pages() {
    let paged = MockConfig {
        page_size: 2,
        ..mock_cfg()
    };
    let all = paged.models.clone();
    let r = start_with(paged, runtime).await;
    let calls = runtime_calls(&r.mock, TARGET_LIST_MODELS);
    // 6 models, 2 a page
    assert_eq!(calls.len(), 3);
    let tokens: Vec<Value> = calls.iter().map(|c| c.body["nextToken"].clone()).collect();
    assert_eq!(tokens, [Value::Null, json!("2"), json!("4")]);
    for c in &calls {
        assert_eq!(header(c, "content-type"), "application/x-amz-json-1.0");
        assert_eq!(c.body["origin"], "KIRO_CLI");
        assert_eq!(c.body["profileArn"], ARN);
    }
    let mut got: Vec<String> = r
        .gateway
        .parts
        .catalog
        .models()
        .into_iter()
        .map(|m| m.model_id)
        .collect();
    let mut want = all;
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        r.gateway.parts.catalog.source(),
        kiro_gateway::models::CatalogSource::Upstream
    );
}

#[tokio::test]
async fn runtime_refuses_to_start_without_a_profile_arn() {
    let mock = MockKiro::start(mock_cfg()).await.unwrap();
    let mut cfg = Config::default();
    cfg.use_mock(&mock);
    cfg.kiro_api_protocol = kiro_gateway::kiro::ApiProtocol::Runtime;
    let Err(e) = Gateway::from_config(&cfg.validate().unwrap()) else {
        panic!("started without a profile ARN");
    };
    let text = e.to_string();
    for hint in [
        "profile ARN",
        "KIRO_CLI_DB_FILE",
        "KIRO_CREDS_FILE",
        "PROFILE_ARN",
        "state",
    ] {
        assert!(text.contains(hint), "{hint} missing: {text}");
    }
    // the q protocol starts with the same settings (desktop accounts get it from the refresh)
    cfg.kiro_api_protocol = kiro_gateway::kiro::ApiProtocol::Q;
    assert!(Gateway::from_config(&cfg.validate().unwrap()).is_ok());
}

#[tokio::test]
async fn runtime_takes_the_profile_arn_from_kiro_clis_state_table() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data.sqlite3");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE auth_kv (key TEXT PRIMARY KEY, value TEXT);
         CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT);",
    )
    .unwrap();
    let expires =
        kiro_gateway::auth::source::format_expiry(SystemTime::now() + Duration::from_secs(7200));
    conn.execute(
        "INSERT INTO auth_kv VALUES ('kirocli:social:token', ?1)",
        [
            json!({"access_token": "cli-access", "refresh_token": "mock-refresh-0",
            "expires_at": expires, "region": "us-east-1"})
            .to_string(),
        ],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO state VALUES ('api.codewhisperer.profile', ?1)",
        [json!({"arn": ARN, "profile_name": "Social_Default_Profile"}).to_string()],
    )
    .unwrap();
    drop(conn);
    let cli = MockConfig {
        initial_access_token: Some("cli-access".into()),
        ..Default::default()
    };
    let r = start_with(cli, |c| {
        c.kiro_api_protocol = kiro_gateway::kiro::ApiProtocol::Runtime;
        c.kiro_cli_db_file = Some(db.clone());
    })
    .await;
    let (status, _, _) = r
        .chat(
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 200);
    let calls = runtime_calls(&r.mock, TARGET_GENERATE);
    assert_runtime_generate(&calls[0], "claude-sonnet-4.5");
    assert_eq!(calls[0].token.as_deref(), Some("cli-access"));
}

#[tokio::test]
async fn mock_runtime_refuses_calls_without_a_profile_arn() {
    let mock = MockKiro::start(MockConfig {
        initial_access_token: Some("a".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut cfg = KiroClientConfig::runtime(mock.url(), mock.url());
    cfg.headers = KiroHeaders::new("test-fingerprint");
    let client = KiroClient::new(http(), cfg);
    let mut req = GenerateRequest::new(simple_body("hi", None));
    req.token = Some(Secret::new("a"));
    let Err(Error::Status(s)) = client.clone().oneshot(req).await else {
        panic!("accepted a runtime call without profileArn");
    };
    assert_eq!(s.status, 400);
    assert_eq!(s.message, "profileArn is required for this request.");
    let Err(Error::Status(s)) = client.list_models(&Secret::new("a"), None).await else {
        panic!("listed models without profileArn");
    };
    assert_eq!(
        (s.status.as_u16(), s.message.as_str()),
        (400, "profileArn is required for this request.")
    );
    // with one, both work
    let mut req = GenerateRequest::new(simple_body("hi", Some(ARN.into())));
    req.token = Some(Secret::new("a"));
    assert!(client.clone().oneshot(req).await.is_ok());
    let list = client
        .list_models(&Secret::new("a"), Some(ARN))
        .await
        .unwrap();
    assert_eq!(list.models.len(), mock.config().models.len());
}

#[tokio::test]
async fn q_protocol_stays_the_default() {
    let r = start().await;
    let (status, _, _) = r
        .chat(
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 200);
    let calls = r.mock.requests_to("/generateAssistantResponse");
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(header(c, "content-type"), "application/json");
    assert_eq!(header(c, "x-amzn-codewhisperer-optout"), "true");
    assert!(c.headers.get("x-amz-target").is_none());
    assert!(c.headers.get("tokentype").is_none());
    assert_eq!(
        c.body["conversationState"]["currentMessage"]["userInputMessage"]["origin"],
        "AI_EDITOR"
    );
    assert_eq!(r.mock.requests_to("/ListAvailableModels").len(), 1);
    assert!(r.mock.requests_to("/").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Kiro API keys

fn api_key_mock() -> MockConfig {
    MockConfig {
        api_key: Some(API_KEY.into()),
        ..Default::default()
    }
}

fn with_api_key(key: &'static str) -> impl FnOnce(&mut Config) {
    move |c: &mut Config| {
        c.refresh_token = None;
        c.kiro_api_key = Some(Secret::new(key));
    }
}

fn assert_api_key_bearer(calls: &[Recorded]) {
    assert!(!calls.is_empty());
    for c in calls {
        assert_eq!(c.token.as_deref(), Some(API_KEY), "{}", c.path);
        assert_eq!(header(c, "tokentype"), "API_KEY", "{}", c.path);
    }
}

#[tokio::test]
async fn api_key_is_the_bearer_with_tokentype_and_is_never_refreshed() {
    let r = start_with(api_key_mock(), with_api_key(API_KEY)).await;
    assert_eq!(
        r.gateway.parts.catalog.source(),
        kiro_gateway::models::CatalogSource::Upstream
    );
    let (status, _, _) = r
        .chat(
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _, text) = anthropic(
        &r,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 50, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let upstream: Vec<Recorded> = r
        .mock
        .requests()
        .into_iter()
        .filter(|c| !c.path.starts_with("/__mock"))
        .collect();
    // the model list and both chats
    assert_eq!(upstream.len(), 3);
    assert_api_key_bearer(&upstream);
    assert_eq!(r.mock.desktop_refreshes() + r.mock.oidc_refreshes(), 0);
    assert!(r.mock.requests_to("/refreshToken").is_empty());
    assert!(r.mock.requests_to("/token").is_empty());
    // /health names the source, and never the key
    let (_, _, bytes) = r.send(r.req("GET", "/health", "")).await;
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["auth"]["type"], "kiro_api_key");
    assert_eq!(v["auth"]["source"], "api_key");
    assert!(!String::from_utf8_lossy(&bytes).contains(API_KEY));
}

#[tokio::test]
async fn api_key_works_on_the_runtime_protocol() {
    let r = start_with(api_key_mock(), |c| {
        with_api_key(API_KEY)(c);
        runtime(c);
    })
    .await;
    let (status, _, _) = r
        .chat(
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 200);
    let calls = runtime_calls(&r.mock, TARGET_GENERATE);
    assert_runtime_generate(&calls[0], "claude-sonnet-4.5");
    assert_api_key_bearer(&calls);
    assert_api_key_bearer(&runtime_calls(&r.mock, TARGET_LIST_MODELS));
    assert_eq!(r.mock.desktop_refreshes() + r.mock.oidc_refreshes(), 0);
}

#[tokio::test]
async fn refused_api_key_is_reported_as_an_invalid_key_in_each_dialect() {
    let r = start_with(api_key_mock(), with_api_key("ksk_revoked_key")).await;
    let generate_before = r.mock.generate_calls();
    // OpenAI, non-stream and stream
    for stream in [false, true] {
        let (status, _, bytes) = r
            .chat(json!({"model": "claude-sonnet-4-5", "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]}))
            .await;
        assert_eq!(status, 403, "{}", String::from_utf8_lossy(&bytes));
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"]["code"], "kiro_api_key_invalid", "{v}");
        assert_eq!(v["error"]["type"], "permission_error", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("API key") && msg.contains("KIRO_API_KEY"),
            "{msg}"
        );
        assert!(!msg.contains("refresh"), "{msg}");
        assert!(!msg.contains("ksk_revoked_key"), "{msg}");
    }
    // Anthropic, non-stream and stream
    for stream in [false, true] {
        let (status, v, text) = anthropic(
            &r,
            json!({"model": "claude-sonnet-4-5", "max_tokens": 50, "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(status, 403, "{text}");
        assert_eq!(v["type"], "error", "{text}");
        assert_eq!(v["error"]["type"], "permission_error", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("API key") && msg.contains("KIRO_API_KEY"),
            "{msg}"
        );
        assert!(!msg.contains("refresh"), "{msg}");
    }
    // one upstream call per request: no refresh, no retry
    assert_eq!(r.mock.generate_calls() - generate_before, 4);
    assert_eq!(r.mock.desktop_refreshes() + r.mock.oidc_refreshes(), 0);
    // the wrong key was still sent the right way
    assert_eq!(
        header(
            &r.mock.requests_to("/generateAssistantResponse")[0],
            "tokentype"
        ),
        "API_KEY"
    );
}

#[tokio::test]
async fn suspended_account_with_an_api_key_is_not_called_an_invalid_key() {
    let r = start_with(api_key_mock(), with_api_key(API_KEY)).await;
    r.mock.push_reply(Reply::Status {
        status: 403,
        body: r#"{"message":"Your account temporarily is suspended","reason":"TEMPORARILY_SUSPENDED"}"#
            .into(),
    });
    let (status, _, bytes) = r
        .chat(
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 403);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["error"]["code"], "TEMPORARILY_SUSPENDED", "{v}");
    assert_eq!(r.mock.desktop_refreshes() + r.mock.oidc_refreshes(), 0);
}

// ---------------------------------------------------------------------------------------------
// the model catalogue

fn limits(max_in: u64, max_out: u64) -> Value {
    json!({"tokenLimits": {"maxInputTokens": max_in, "maxOutputTokens": max_out}})
}

#[tokio::test]
async fn one_m_and_thinking_suffixes_resolve_to_the_base_model_and_its_window() {
    let mock_cfg = MockConfig {
        model_fields: vec![("claude-sonnet-4.5".into(), limits(1_000_000, 64_000))],
        ..Default::default()
    };
    let r = start_with(mock_cfg, |_| {}).await;
    let window = |model: &str, expected_id: &str, expected_prompt: u64| {
        let r = &r;
        let model = model.to_owned();
        let expected_id = expected_id.to_owned();
        async move {
            let (status, _, bytes) = r
                .chat(json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
                .await;
            assert_eq!(status, 200, "{model}: {}", String::from_utf8_lossy(&bytes));
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["model"], model.as_str(), "the client's name is echoed");
            let sent = r.mock.requests_to("/generateAssistantResponse");
            let last = &sent.last().unwrap().body;
            assert_eq!(
                last["conversationState"]["currentMessage"]["userInputMessage"]["modelId"],
                expected_id.as_str(),
                "{model}"
            );
            // prompt tokens = the service's context percentage × the resolved window
            assert_eq!(v["usage"]["prompt_tokens"], expected_prompt, "{model}");
        }
    };
    let pct = kiro_gateway::mock::script::DEFAULT_CONTEXT_PERCENT / 100.0;
    let one_m = (pct * 1_000_000.0).round() as u64;
    let two_hundred_k = (pct * 200_000.0).round() as u64;
    // the catalogue reports 1M for sonnet 4.5: the [1m] form gets it
    window("claude-sonnet-4-5[1m]", "claude-sonnet-4.5", one_m).await;
    window("claude-sonnet-4-5-20250929[1m]", "claude-sonnet-4.5", one_m).await;
    // the catalogue reports 200k for haiku: [1m] never claims more
    window("claude-haiku-4-5[1m]", "claude-haiku-4.5", two_hundred_k).await;
    window(
        "claude-haiku-4-5-thinking",
        "claude-haiku-4.5",
        two_hundred_k,
    )
    .await;
    window("claude-sonnet-4-5-thinking[1m]", "claude-sonnet-4.5", one_m).await;
    // the Anthropic dialect resolves the same way
    let (status, v, text) = anthropic(
        &r,
        json!({"model": "claude-opus-4-5-thinking", "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(v["model"], "claude-opus-4-5-thinking");
    let sent = r.mock.requests_to("/generateAssistantResponse");
    assert_eq!(
        sent.last().unwrap().body["conversationState"]["currentMessage"]["userInputMessage"]
            ["modelId"],
        "claude-opus-4.5"
    );
    assert_eq!(v["usage"]["input_tokens"], two_hundred_k);
}

fn entry<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {list}"))
}

#[tokio::test]
async fn models_endpoints_show_context_length_and_max_output_tokens() {
    let mock_cfg = MockConfig {
        model_fields: vec![
            ("claude-sonnet-4.5".into(), limits(1_000_000, 64_000)),
            ("claude-haiku-4.5".into(), limits(200_000, 8_192)),
        ],
        ..Default::default()
    };
    let r = start_with(mock_cfg, |_| {}).await;
    // OpenAI shape
    let (status, _, bytes) = r.send(r.req("GET", "/v1/models", "")).await;
    assert_eq!(status, 200);
    let list: Value = serde_json::from_slice(&bytes).unwrap();
    let sonnet = entry(&list, "claude-sonnet-4.5");
    assert_eq!(sonnet["context_length"], 1_000_000);
    assert_eq!(sonnet["max_output_tokens"], 64_000);
    let haiku = entry(&list, "claude-haiku-4.5");
    assert_eq!(
        (&haiku["context_length"], &haiku["max_output_tokens"]),
        (&json!(200_000), &json!(8_192))
    );
    // the alias shows the limits of what it resolves to (the mock's default for auto)
    assert_eq!(entry(&list, "auto-kiro")["context_length"], 200_000);
    // Anthropic shape
    let mut req = r.req("GET", "/v1/models", "");
    req.headers_mut()
        .insert("anthropic-version", "2023-06-01".parse().unwrap());
    let (_, _, bytes) = r.send(req).await;
    let list: Value = serde_json::from_slice(&bytes).unwrap();
    let sonnet = entry(&list, "claude-sonnet-4.5");
    assert_eq!(sonnet["type"], "model");
    assert_eq!(sonnet["context_length"], 1_000_000);
    assert_eq!(sonnet["max_output_tokens"], 64_000);
    // one model, by any spelling, in both shapes
    let (status, _, bytes) = r
        .send(r.req("GET", "/v1/models/claude-sonnet-4-5[1m]", ""))
        .await;
    assert_eq!(status, 200);
    let m: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(m["id"], "claude-sonnet-4-5[1m]");
    assert_eq!(m["object"], "model");
    assert_eq!(m["context_length"], 1_000_000);
    let mut req = r.req("GET", "/v1/models/claude-haiku-4-5", "");
    req.headers_mut()
        .insert("anthropic-version", "2023-06-01".parse().unwrap());
    let (_, _, bytes) = r.send(req).await;
    let m: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(m["type"], "model");
    assert_eq!(m["max_output_tokens"], 8_192);
}

#[tokio::test]
async fn models_endpoint_claims_no_limits_on_the_fallback_list() {
    // the model list cannot be fetched: the built-in list, without figures
    let r = start_with(MockConfig::default(), |c| {
        c.kiro_api_url = "http://127.0.0.1:9".into();
    })
    .await;
    assert_eq!(
        r.gateway.parts.catalog.source(),
        kiro_gateway::models::CatalogSource::Fallback
    );
    let (_, _, bytes) = r.send(r.req("GET", "/v1/models", "")).await;
    let list: Value = serde_json::from_slice(&bytes).unwrap();
    let sonnet = entry(&list, "claude-sonnet-4.5");
    assert!(sonnet.get("context_length").is_none(), "{sonnet}");
    assert!(sonnet.get("max_output_tokens").is_none(), "{sonnet}");
}

#[tokio::test]
async fn catalogue_refreshes_in_the_background_never_on_a_request() {
    let r = start_with(MockConfig::default(), |c| c.model_cache_ttl_secs = 1).await;
    let lists = |r: &Running| r.mock.requests_to("/ListAvailableModels").len();
    assert_eq!(lists(&r), 1);
    for _ in 0..3 {
        let (status, _, _) = r
            .chat(json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}))
            .await;
        assert_eq!(status, 200);
    }
    // requests never fetch the list, even with a TTL this short
    assert_eq!(lists(&r), 1);
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(
        r.gateway
            .clone()
            .refresh_models_periodically(cancel.clone()),
    );
    // one TTL (1 s) and a half: the refresh period is the behaviour under test
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(lists(&r), 2);
    // a failed refresh keeps the list it had
    let before = r.gateway.parts.catalog.models();
    r.mock.revoke_access_tokens();
    r.mock.revoke_refresh_token();
    // past the next period, so that the failed refresh has run and been handled: a fixed
    // wait, as nothing signals a refresh that changed nothing
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(lists(&r) >= 3);
    assert_eq!(r.gateway.parts.catalog.models(), before);
    assert_eq!(
        r.gateway.parts.catalog.source(),
        kiro_gateway::models::CatalogSource::Upstream
    );
    cancel.cancel();
    task.await.unwrap();
}
