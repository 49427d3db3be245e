//! Model names as real clients send them: Claude Code's ids newer than any catalogue
//! (`UNKNOWN_MODEL_POLICY`), configured aliases (`MODEL_ALIASES`), the `x-kiro-model` header
//! on every chat answer, native reasoning effort, and the Codex model catalogue.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use common::{sse_payloads, start, start_with, Running};
use http::StatusCode;
use kiro_gateway::mock::{MockConfig, Reply, Script};
use kiro_gateway::models::{ModelCatalog, UnknownModelPolicy};
use serde::Deserialize;
use serde_json::{json, Value};

const HEADER: &str = "x-kiro-model";

async fn post(r: &Running, path: &str, body: Value) -> (StatusCode, http::HeaderMap, Value) {
    let (s, h, b) = r.send(r.req("POST", path, body.to_string())).await;
    let v = serde_json::from_slice(&b).unwrap_or_else(|_| json!(String::from_utf8_lossy(&b)));
    (s, h, v)
}

fn messages(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 100, "stream": stream,
           "messages": [{"role": "user", "content": "hi"}]})
}

fn upstream_model(r: &Running) -> String {
    r.last_generate()["conversationState"]["currentMessage"]["userInputMessage"]["modelId"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn header(h: &http::HeaderMap) -> Option<&str> {
    h.get(HEADER).and_then(|v| v.to_str().ok())
}

// ---- 1. Claude Code's own model names ----

#[tokio::test]
async fn claude_code_ids_are_served_by_the_newest_model_of_their_family() {
    let r = start().await;
    for (requested, served) in [
        ("claude-opus-4-8", "claude-opus-4.5"),
        ("claude-sonnet-5", "claude-sonnet-4.5"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4.5"),
        ("claude-haiku-5-20260101", "claude-haiku-4.5"),
        ("opus", "claude-opus-4.5"),
        ("sonnet", "claude-sonnet-4.5"),
        ("haiku", "claude-haiku-4.5"),
        ("claude-opus-4-8[1m]", "claude-opus-4.5"),
    ] {
        r.mock.push_reply(Reply::Stream(Script::text("Hello.", 2)));
        let (s, h, v) = post(&r, "/v1/messages", messages(requested, false)).await;
        assert_eq!(s, 200, "{requested}: {v}");
        assert_eq!(header(&h), Some(served), "{requested}");
        assert_eq!(upstream_model(&r), served, "{requested}");
        // the answer echoes what the client asked for
        assert_eq!(v["model"], requested);
        assert_eq!(v["content"][0]["text"], "Hello.");
    }
}

#[tokio::test]
async fn a_name_of_no_known_family_is_a_400_listing_close_matches() {
    let r = start().await;
    let (s, h, v) = post(
        &r,
        "/v1/chat/completions",
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(header(&h), None, "no model served a refusal");
    assert_eq!(
        v["error"]["message"],
        "The model \"gpt-4o\" is not available through this Kiro account. Did you mean: auto-kiro, claude-opus-4.5, claude-sonnet-4? GET /v1/models lists the models."
    );
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["param"], "model");
    assert!(r.mock.requests_to("/generateAssistantResponse").is_empty());
}

#[tokio::test]
async fn reject_keeps_refusing_ids_the_catalogue_lacks() {
    let r = start_with(MockConfig::default(), |c| {
        c.unknown_model_policy = kiro_gateway::models::UnknownModelPolicy::Reject
    })
    .await;
    let (s, _, v) = post(&r, "/v1/messages", messages("claude-sonnet-5", false)).await;
    assert_eq!(s, 400);
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "invalid_request_error",
            "message": "The model \"claude-sonnet-5\" is not available through this Kiro account. Did you mean: claude-sonnet-4, claude-sonnet-4.5, claude-3.7-sonnet? GET /v1/models lists the models."}})
    );
    assert!(r.mock.requests_to("/generateAssistantResponse").is_empty());
}

#[tokio::test]
async fn pass_sends_the_name_upstream_as_written() {
    let r = start_with(MockConfig::default(), |c| {
        c.unknown_model_policy = kiro_gateway::models::UnknownModelPolicy::Pass
    })
    .await;
    // the mock refuses unknown ids as the service does
    r.expect_rejections
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (s, _, _) = post(&r, "/v1/messages", messages("claude-sonnet-5", false)).await;
    assert_eq!(s, 400);
    assert_eq!(upstream_model(&r), "claude-sonnet-5");
}

// ---- x-kiro-model on every chat answer ----

#[tokio::test]
async fn every_chat_answer_names_the_serving_model_in_x_kiro_model() {
    let r = start().await;
    let bodies = |stream: bool| {
        [
            (
                "/v1/chat/completions",
                json!({"model": "claude-sonnet-4-5", "stream": stream,
                       "messages": [{"role": "user", "content": "hi"}]}),
            ),
            ("/v1/messages", messages("claude-sonnet-4-5", stream)),
            (
                "/v1/responses",
                json!({"model": "claude-sonnet-4-5", "stream": stream, "input": "hi"}),
            ),
        ]
    };
    for stream in [false, true] {
        for (path, body) in bodies(stream) {
            r.mock
                .push_reply(Reply::Stream(Script::text("Hello there.", 3)));
            let (s, h, b) = r.send(r.req("POST", path, body.to_string())).await;
            assert_eq!(s, 200, "{path} stream={stream}");
            assert_eq!(
                header(&h),
                Some("claude-sonnet-4.5"),
                "{path} stream={stream}"
            );
            if !stream {
                let text = String::from_utf8_lossy(&b);
                assert!(text.contains("Hello there."), "{path}: {text}");
            } else {
                assert_eq!(
                    h.get("content-type").unwrap(),
                    "text/event-stream",
                    "{path}"
                );
                assert!(!sse_payloads(&b).is_empty());
            }
        }
    }
}

// ---- 2. model aliases ----

#[tokio::test]
async fn model_aliases_map_tool_names_to_catalogue_models() {
    let r = start_with(MockConfig::default(), |c| {
        c.model_aliases
            .insert("gpt-4o".into(), "claude-sonnet-4-5".into());
        c.set_env("MODEL_ALIASES", "o3=claude-opus-4.5").unwrap();
    })
    .await;
    for (requested, served) in [
        ("gpt-4o", "claude-sonnet-4.5"),
        ("o3", "claude-opus-4.5"),
        ("GPT-4o", "claude-sonnet-4.5"),
    ] {
        r.mock.push_reply(Reply::Stream(Script::text("ok", 1)));
        let (s, h, v) = post(
            &r,
            "/v1/chat/completions",
            json!({"model": requested, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(s, 200, "{requested}: {v}");
        assert_eq!(header(&h), Some(served));
        assert_eq!(upstream_model(&r), served);
        assert_eq!(v["model"], requested);
    }
    assert_eq!(r.gateway.parts.catalog.unknown_alias_targets(), []);
}

// ---- 8. native reasoning effort ----

fn native_mock() -> MockConfig {
    let schema = json!({"type": "object", "properties": {
        "thinking": {"type": "object", "properties": {
            "type": {"type": "string", "enum": ["enabled", "adaptive", "disabled"]},
            "budget_tokens": {"type": "integer", "minimum": 1024, "maximum": 32000}}},
        "output_config": {"type": "object", "properties": {
            "effort": {"type": "string", "enum": ["low", "medium", "high", "max"]}}}}});
    MockConfig {
        model_fields: vec![(
            "claude-sonnet-4.5".into(),
            json!({"additionalModelRequestFieldsSchema": schema}),
        )],
        ..Default::default()
    }
}

#[tokio::test]
async fn an_effort_is_sent_natively_as_adaptive_thinking_in_every_dialect() {
    let r = start_with(native_mock(), |_| {}).await;
    let adaptive =
        |e: &str| json!({"thinking": {"type": "adaptive"}, "output_config": {"effort": e}});
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": "claude-sonnet-4-5", "reasoning_effort": "low",
                   "messages": [{"role": "user", "content": "hi"}]}),
            adaptive("low"),
        ),
        (
            "/v1/responses",
            json!({"model": "claude-sonnet-4-5", "reasoning": {"effort": "high", "summary": "auto"},
                   "input": "hi"}),
            adaptive("high"),
        ),
        (
            "/v1/responses",
            json!({"model": "claude-sonnet-4-5", "reasoning": {"effort": "xhigh"}, "input": "hi"}),
            adaptive("max"),
        ),
        // Anthropic: an effort without `thinking`, and adaptive with an effort
        (
            "/v1/messages",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
                   "output_config": {"effort": "medium"},
                   "messages": [{"role": "user", "content": "hi"}]}),
            adaptive("medium"),
        ),
        (
            "/v1/messages",
            json!({"model": "claude-sonnet-5", "max_tokens": 100,
                   "thinking": {"type": "adaptive"}, "output_config": {"effort": "high"},
                   "messages": [{"role": "user", "content": "hi"}]}),
            adaptive("high"),
        ),
        // a budget request keeps enabled with budget_tokens, an effort beside it or not
        (
            "/v1/messages",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
                   "thinking": {"type": "enabled", "budget_tokens": 2048},
                   "output_config": {"effort": "high"},
                   "messages": [{"role": "user", "content": "hi"}]}),
            json!({"thinking": {"type": "enabled", "budget_tokens": 2048}}),
        ),
    ];
    for (path, body, want) in cases {
        r.mock.push_reply(Reply::Stream(Script::text("ok", 1)));
        let (s, _, v) = post(&r, path, body.clone()).await;
        assert_eq!(s, 200, "{body}: {v}");
        let up = r.last_generate();
        assert_eq!(up["additionalModelRequestFields"], want, "{body}");
        assert!(
            !up.to_string().contains("<thinking_mode>"),
            "no prompt tags: {up}"
        );
    }
}

// ---- 5. the Codex model catalogue ----

/// Codex's `ModelInfo` as its older, strict versions decode it (codex
/// `protocol/src/openai_models.rs`): every member without a serde default is required, and
/// the enums take exactly these spellings. Newer versions need a subset of these members
/// and accept the same spellings.
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // read by serde only
struct CodexModelInfo {
    slug: String,
    display_name: String,
    description: Option<String>,
    #[serde(default)]
    default_reasoning_level: Option<Effort>,
    supported_reasoning_levels: Vec<EffortPreset>,
    shell_type: ShellType,
    visibility: Visibility,
    supported_in_api: bool,
    priority: i32,
    upgrade: Option<Value>,
    base_instructions: String,
    #[serde(default)]
    model_messages: Option<ModelMessages>,
    supports_reasoning_summaries: bool,
    support_verbosity: bool,
    default_verbosity: Option<Value>,
    apply_patch_tool_type: Option<ApplyPatch>,
    truncation_policy: Truncation,
    supports_parallel_tool_calls: bool,
    #[serde(default)]
    context_window: Option<i64>,
    effective_context_window_percent: i64,
    experimental_supported_tools: Vec<String>,
    input_modalities: Vec<Modality>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Effort {
    None,
    Minimal,
    Low,
    Medium,
    High,
    XHigh,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct EffortPreset {
    effort: Effort,
    description: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ShellType {
    Default,
    Local,
    UnifiedExec,
    Disabled,
    ShellCommand,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Visibility {
    List,
    Hide,
    None,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum ApplyPatch {
    Freeform,
    Function,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Truncation {
    mode: TruncationMode,
    limit: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TruncationMode {
    Bytes,
    Tokens,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Modality {
    Text,
    Image,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct ModelMessages {
    instructions_template: Option<String>,
    instructions_variables: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct CodexModels {
    models: Vec<CodexModelInfo>,
}

/// Decode as Codex does and check what makes Codex use the models well.
fn check_codex_shape(catalog: &Value) -> Vec<String> {
    let decoded: CodexModels = serde_json::from_value(catalog.clone())
        .unwrap_or_else(|e| panic!("Codex could not decode the catalogue: {e}\n{catalog}"));
    for m in &decoded.models {
        assert_eq!(
            m.apply_patch_tool_type,
            Some(ApplyPatch::Freeform),
            "{}",
            m.slug
        );
        assert!(
            m.supported_reasoning_levels
                .iter()
                .any(|l| Some(&l.effort) == m.default_reasoning_level.as_ref()),
            "{}: the default level is one it offers",
            m.slug
        );
        assert!(m.supports_reasoning_summaries);
        assert!(!m.base_instructions.is_empty());
        assert_eq!(
            m.model_messages
                .as_ref()
                .and_then(|x| x.instructions_template.as_deref()),
            Some(m.base_instructions.as_str())
        );
    }
    decoded.models.into_iter().map(|m| m.slug).collect()
}

#[test]
fn the_shipped_codex_catalogue_is_the_built_in_list_in_codex_shape() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/codex/model_catalog.json"
    );
    let built_in = kiro_gateway::codex_catalog::codex_catalog(&ModelCatalog::new(
        Duration::from_secs(60),
        UnknownModelPolicy::Nearest,
    ));
    if std::env::var_os("UPDATE_CODEX_CATALOG").is_some() {
        let text = serde_json::to_string_pretty(&built_in).unwrap() + "\n";
        std::fs::write(path, text).unwrap();
    }
    let shipped: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(
        shipped, built_in,
        "examples/codex/model_catalog.json is stale: rerun this test with UPDATE_CODEX_CATALOG=1"
    );
    let slugs = check_codex_shape(&shipped);
    for want in [
        "claude-sonnet-4.5",
        "claude-haiku-4.5",
        "claude-sonnet-4",
        "claude-3.7-sonnet",
        "claude-opus-4.5",
    ] {
        assert!(slugs.iter().any(|s| s == want), "{want} missing: {slugs:?}");
    }
    let sonnet = &shipped["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["slug"] == "claude-sonnet-4.5")
        .unwrap();
    assert_eq!(sonnet["context_window"], 200_000);
    assert_eq!(sonnet["shell_type"], "shell_command");
    assert_eq!(
        sonnet["supported_reasoning_levels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["effort"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["low", "medium", "high", "xhigh"]
    );
}

#[tokio::test]
async fn codex_catalog_prints_the_models_the_accounts_list_now() {
    let mock = kiro_gateway::mock::MockKiro::start(MockConfig {
        models: vec![
            "auto".into(),
            "claude-sonnet-4.5".into(),
            "claude-opus-4.6".into(),
        ],
        model_fields: vec![(
            "claude-opus-4.6".into(),
            json!({"modelName": "Claude Opus 4.6", "description": "The newest Opus",
                   "tokenLimits": {"maxInputTokens": 1000000, "maxOutputTokens": 128000},
                   "additionalModelRequestFieldsSchema": {"type": "object", "properties": {
                       "thinking": {"type": "object", "properties": {"type": {"enum": ["adaptive"]}}},
                       "output_config": {"type": "object", "properties": {
                           "effort": {"enum": ["low", "high", "max"]}}}}}}),
        )],
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = mock.url();
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        let token = mock.config().initial_refresh_token.clone();
        move || {
            common::binary_in(&dir)
                .arg("codex-catalog")
                .env("REFRESH_TOKEN", token)
                .env("KIRO_API_URL", &url)
                .env("KIRO_DESKTOP_AUTH_URL", &url)
                .env("KIRO_OIDC_URL", &url)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let catalog: Value = serde_json::from_slice(&out.stdout).unwrap();
    // the accounts' list now (the built-in list has no claude-opus-4.6), as /v1/models lists it
    assert_eq!(
        check_codex_shape(&catalog),
        [
            "auto-kiro",
            "claude-3.7-sonnet",
            "claude-opus-4.6",
            "claude-sonnet-4.5"
        ]
    );
    let opus = &catalog["models"][2];
    assert_eq!(opus["display_name"], "Claude Opus 4.6");
    assert_eq!(opus["description"], "The newest Opus");
    assert_eq!(opus["context_window"], 1_000_000);
    assert_eq!(
        opus["supported_reasoning_levels"],
        json!([{"effort": "low", "description": "Quick answers with light reasoning"},
               {"effort": "high", "description": "Deeper reasoning for hard problems"},
               {"effort": "xhigh", "description": "The deepest reasoning the model offers"}])
    );
    // the schema has no medium: the first level it has is the default
    assert_eq!(opus["default_reasoning_level"], "low");
    assert_eq!(catalog["models"][3]["context_window"], 200_000);
}

#[test]
fn codex_catalog_fails_on_stderr_when_the_models_cannot_be_listed() {
    let dir = tempfile::tempdir().unwrap();
    // a port nothing listens on
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = common::binary_in(dir.path())
        .arg("codex-catalog")
        .env("REFRESH_TOKEN", "r")
        .env("KIRO_API_URL", &url)
        .env("KIRO_DESKTOP_AUTH_URL", &url)
        .env("KIRO_OIDC_URL", &url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.starts_with("kiro-gateway: could not list the models: ")),
        "{err}"
    );
}

#[test]
fn an_alias_to_a_model_not_in_the_catalogue_stops_the_startup() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::binary_in(dir.path())
        .args(["--demo", "--port", "0"])
        .env(
            "MODEL_ALIASES",
            "gpt-4o=claude-sonnet-4.5,o3=claude-sonnet-9",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines().any(|l| l
            == "kiro-gateway: MODEL_ALIASES: the alias target is not in the model catalogue: \"o3\" -> \"claude-sonnet-9\" (the catalogue: auto-kiro, claude-3.7-sonnet, claude-haiku-4.5, claude-opus-4.5, claude-sonnet-4, claude-sonnet-4.5)"),
        "{err}"
    );
}
