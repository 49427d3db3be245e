//! Golden SSE transcripts for both dialects: text, prompt-tag thinking, native reasoning
//! (signed, redacted, service usage with cache figures), a `MAX_TOKENS` stop with a wrapped
//! metadata payload, tool use (arguments cut inside escapes) and an error mid-stream, compared event by event as parsed JSON. Response ids and timestamps
//! are masked; everything else (event order, block indexes, deltas, stop reasons, usage) must
//! match `tests/fixtures/*.json` exactly. `UPDATE_GOLDEN=1 cargo test --test golden` rewrites
//! the fixtures (review the diff before committing it). Never in CI: with `CI` set,
//! `UPDATE_GOLDEN` fails the tests instead (see [`golden_mode`]), and `.ci/run` also fails when a
//! fixture differs from the commit after the tests. A missing fixture is a failure, not a new
//! file, unless `UPDATE_GOLDEN` is set outside CI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::start;
use kiro_gateway::mock::{Fault, MockEvent, Reply, Script};
use serde_json::{json, Value};

const TRICKY_ARGS: &str = r#"{"path":"C:\\tmp\\a \"b\".txt","text":"line1\nline2 é 😀","n":[1,2]}"#;

/// Named answers; the `native_` ones run against a catalogue that advertises native reasoning.
fn scripts() -> Vec<(&'static str, Script)> {
    vec![
        ("text", Script::text("Hello, wörld! 日本語 😀", 5)),
        (
            "native_reasoning",
            Script::new()
                .metadata()
                .event(MockEvent::Reasoning {
                    text: "Compare: 2 < 3, é.".into(),
                    signature: Some("c2lnbmF0dXJl".into()),
                    delta: 6,
                })
                .event(MockEvent::RedactedReasoning("cmVkYWN0ZWQ=".into()))
                .text_deltas("Yes: 2 < 3.", 4)
                .event(MockEvent::TokenUsage {
                    usage: json!({"uncachedInputTokens": 15, "cacheReadInputTokens": 2048,
                                  "cacheWriteInputTokens": 0, "outputTokens": 31, "totalTokens": 2094}),
                    stop_reason: Some("END_TURN".into()),
                })
                .end(),
        ),
        (
            "service_usage_max_tokens",
            Script::new()
                .metadata()
                .text_deltas("A long answer", 4)
                .event(MockEvent::Wrapped(Box::new(MockEvent::TokenUsage {
                    usage: json!({"uncachedInputTokens": 900, "outputTokens": 64, "totalTokens": 964}),
                    stop_reason: Some("MAX_TOKENS".into()),
                })))
                .end(),
        ),
        (
            "thinking",
            Script::text("<thinking>Is 2 < 3? Yes, é.</thinking>\n\nIt is: 2 < 3.", 4),
        ),
        (
            "tool_use",
            Script::new()
                .metadata()
                .text_deltas("Let me check.", 7)
                .event(MockEvent::ToolCall {
                    id: "tooluse_golden".into(),
                    name: "write_file".into(),
                    arguments: TRICKY_ARGS.into(),
                    fragment: 6,
                })
                .end(),
        ),
        (
            "error_mid_stream",
            Script::text("partial answer here", 4).fault(Fault::ExceptionAt {
                frame: 3,
                kind: "InternalServerException".into(),
                message: "Encountered an unexpected error".into(),
            }),
        ),
    ]
}

async fn runner(name: &str) -> common::Running {
    if !name.starts_with("native_") {
        return start().await;
    }
    let schema = json!({"type": "object", "properties": {"thinking": {"type": "object",
        "properties": {"type": {"enum": ["enabled"]}, "budget_tokens": {"type": "integer"}}}}});
    let cfg = kiro_gateway::mock::MockConfig {
        model_fields: vec![(
            "claude-sonnet-4.5".into(),
            json!({"additionalModelRequestFieldsSchema": schema}),
        )],
        ..Default::default()
    };
    common::start_with(cfg, |_| {}).await
}

fn mask(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    let generated = |s: &str| {
                        ["msg_", "chatcmpl-", "resp_", "fc_", "rs_", "ctc_"]
                            .iter()
                            .any(|p| s.starts_with(p))
                    };
                    if ((k == "id" || k == "item_id") && x.as_str().is_some_and(generated))
                        || k == "created"
                        || k == "created_at"
                    {
                        *x = json!("<masked>");
                    } else {
                        walk(x);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// `[{"event": name|null, "data": json|"[DONE]"}]`
fn parse_sse(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut event = Value::Null;
            let mut data = Value::Null;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    event = json!(n);
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = if d == "[DONE]" {
                        json!("[DONE]")
                    } else {
                        mask(serde_json::from_str(d).unwrap())
                    };
                }
            }
            json!({"event": event, "data": data})
        })
        .collect()
}

/// What [`check`] does with a fixture.
#[derive(Debug, PartialEq, Eq)]
enum GoldenMode {
    /// Compare with the fixture; a missing fixture is a failure.
    Compare,
    /// Write the fixture from what the gateway sent (`UPDATE_GOLDEN` outside CI).
    Rewrite,
    /// Fail: `UPDATE_GOLDEN` is set in CI, where golden files are never rewritten.
    Refuse,
}

/// The mode for the values of `UPDATE_GOLDEN` and `CI` (set or not; any value counts, as
/// CI services set `CI=true` or `CI=1`).
fn golden_mode(update_golden: Option<&OsStr>, ci: Option<&OsStr>) -> GoldenMode {
    match (update_golden.is_some(), ci.is_some()) {
        (false, _) => GoldenMode::Compare,
        (true, false) => GoldenMode::Rewrite,
        (true, true) => GoldenMode::Refuse,
    }
}

fn check(name: &str, got: Vec<Value>) {
    let mode = golden_mode(
        std::env::var_os("UPDATE_GOLDEN").as_deref(),
        std::env::var_os("CI").as_deref(),
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    check_in(mode, &dir, name, got);
}

fn check_in(mode: GoldenMode, dir: &Path, name: &str, got: Vec<Value>) {
    let path = dir.join(format!("{name}.json"));
    match mode {
        GoldenMode::Refuse => panic!(
            "UPDATE_GOLDEN is set and so is CI: golden files are never rewritten in CI. \
             Rewrite them locally (UPDATE_GOLDEN=1 cargo test --test golden), review the diff \
             and commit it"
        ),
        GoldenMode::Rewrite => {
            // through a temp file: the test that reads the tool fixtures runs meanwhile
            let tmp = dir.join(format!(".{name}.json.tmp"));
            std::fs::write(&tmp, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
            std::fs::rename(&tmp, &path).unwrap();
            return;
        }
        GoldenMode::Compare => {}
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => panic!(
            "{name}: the golden file {} cannot be read ({e}); a new one is written only by \
             UPDATE_GOLDEN=1 cargo test --test golden outside CI, then reviewed and committed",
            path.display()
        ),
    };
    let want: Vec<Value> = serde_json::from_str(&text).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "{name}: event {i} differs");
    }
    assert_eq!(got.len(), want.len(), "{name}: event count");
}

#[test]
fn golden_files_are_rewritten_only_when_asked_and_never_in_ci() {
    let set = Some(OsStr::new("1"));
    assert_eq!(golden_mode(None, None), GoldenMode::Compare);
    assert_eq!(golden_mode(None, set), GoldenMode::Compare);
    assert_eq!(golden_mode(set, None), GoldenMode::Rewrite);
    assert_eq!(golden_mode(set, set), GoldenMode::Refuse);
    // any value of CI counts: GitHub Actions sets CI=true
    assert_eq!(
        golden_mode(set, Some(OsStr::new("true"))),
        GoldenMode::Refuse
    );
}

/// The message of the panic `f` raises.
fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let err = std::panic::catch_unwind(f).expect_err("it must fail");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[test]
fn in_ci_update_golden_fails_and_leaves_the_fixture_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openai_text.json");
    std::fs::write(&path, "[]\n").unwrap();
    let d = dir.path().to_path_buf();
    let msg = panic_message(move || {
        check_in(
            GoldenMode::Refuse,
            &d,
            "openai_text",
            vec![json!({"event": null, "data": "[DONE]"})],
        )
    });
    assert!(
        msg.contains("golden files are never rewritten in CI"),
        "{msg}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "[]\n");
}

#[test]
fn a_missing_golden_file_is_a_failure_not_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let msg = panic_message(move || {
        check_in(
            GoldenMode::Compare,
            &d,
            "anthropic_new_case",
            vec![json!({"event": "ping", "data": {}})],
        )
    });
    assert!(
        msg.starts_with("anthropic_new_case: the golden file "),
        "{msg}"
    );
    assert!(msg.contains("UPDATE_GOLDEN=1"), "{msg}");
    assert!(!dir.path().join("anthropic_new_case.json").exists());
    // outside CI, UPDATE_GOLDEN writes it
    check_in(
        GoldenMode::Rewrite,
        dir.path(),
        "anthropic_new_case",
        vec![json!({"event": "ping", "data": {}})],
    );
    assert_eq!(
        serde_json::from_str::<Value>(
            &std::fs::read_to_string(dir.path().join("anthropic_new_case.json")).unwrap()
        )
        .unwrap(),
        json!([{"event": "ping", "data": {}}])
    );
}

#[tokio::test]
async fn anthropic_transcripts_match_the_golden_files() {
    for (name, script) in scripts() {
        let r = runner(name).await;
        r.mock.push_reply(Reply::Stream(script));
        let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": true,
            "tools": [{"name": "write_file", "description": "Write a file",
                       "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}],
            "messages": [{"role": "user", "content": "Go"}]});
        let (status, _, bytes) = r
            .send(r.req("POST", "/v1/messages", body.to_string()))
            .await;
        assert_eq!(status, 200);
        check(&format!("anthropic_{name}"), parse_sse(&bytes));
    }
}

#[tokio::test]
async fn openai_transcripts_match_the_golden_files() {
    for (name, script) in scripts() {
        let r = runner(name).await;
        r.mock.push_reply(Reply::Stream(script));
        let body = json!({"model": "claude-sonnet-4-5", "stream": true,
            "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {"name": "write_file", "description": "Write a file",
                       "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}],
            "messages": [{"role": "user", "content": "Go"}]});
        let (status, _, bytes) = r.chat(body).await;
        assert_eq!(status, 200);
        check(&format!("openai_{name}"), parse_sse(&bytes));
    }
}

#[tokio::test]
async fn responses_transcripts_match_the_golden_files() {
    for (name, script) in scripts() {
        if !["text", "thinking", "tool_use", "error_mid_stream"].contains(&name) {
            continue;
        }
        let r = runner(name).await;
        r.mock.push_reply(Reply::Stream(script));
        let body = json!({"model": "claude-sonnet-4-5", "stream": true, "input": "Go",
            "tools": [{"type": "function", "name": "write_file", "description": "Write a file",
                       "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}]});
        let (status, _, bytes) = r
            .send(r.req("POST", "/v1/responses", body.to_string()))
            .await;
        assert_eq!(status, 200);
        check(&format!("responses_{name}"), parse_sse(&bytes));
    }
}

#[test]
fn the_tool_fixture_reassembles_to_the_exact_arguments() {
    // guards the golden files themselves: the deltas they hold must rebuild the arguments
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/anthropic_tool_use.json");
    let events: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let args: String = events
        .iter()
        .filter_map(|e| e["data"]["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(args, TRICKY_ARGS);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/openai_tool_use.json");
    let events: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let args: String = events
        .iter()
        .filter_map(|e| {
            e["data"]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
        })
        .collect();
    assert_eq!(args, TRICKY_ARGS);
}
