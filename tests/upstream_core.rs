//! The upstream core against the mock Kiro: decoding real frames off the wire, the client
//! service, and every credential flow.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use futures_util::StreamExt;
use kiro_gateway::auth::source::SQLITE_TOKEN_KEYS;
use kiro_gateway::auth::{AuthError, AuthKind, CredentialSettings, TokenConfig};
use kiro_gateway::kiro::client::collect_events;
use kiro_gateway::kiro::eventstream::{Decoder, Frame, Header, HeaderValue};
use kiro_gateway::kiro::{Error, Event, GenerateRequest, ToolCallAssembler};
use kiro_gateway::mock::{Fault, MockConfig, MockKiro, Reply, Script};
use kiro_gateway::Secret;
use serde_json::{json, Value};
use tower::{Service, ServiceExt};

// ---------------------------------------------------------------------------------------------
// decoder against independently encoded frames

fn smithy_frame(event_type: &str, payload: &str) -> Vec<u8> {
    use aws_smithy_types::event_stream::{Header as SH, HeaderValue as SV, Message};
    let msg = Message::new(Bytes::from(payload.to_owned()))
        .add_header(SH::new(
            ":event-type",
            SV::String(event_type.to_owned().into()),
        ))
        .add_header(SH::new(
            ":content-type",
            SV::String("application/json".into()),
        ))
        .add_header(SH::new(":message-type", SV::String("event".into())));
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&msg, &mut out).unwrap();
    out
}

/// A realistic capture: metadata, text (with a repeated delta and multi-byte text), a tool call
/// whose fragments cut inside escapes, metering and context usage.
fn capture() -> (Vec<u8>, Vec<(String, String)>) {
    let events: Vec<(&str, String)> = vec![
        (
            "messageMetadataEvent",
            json!({"conversationId":"c","utteranceId":"u"}).to_string(),
        ),
        (
            "assistantResponseEvent",
            json!({"content":"Let me check "}).to_string(),
        ),
        (
            "assistantResponseEvent",
            json!({"content":"ha"}).to_string(),
        ),
        (
            "assistantResponseEvent",
            json!({"content":"ha"}).to_string(),
        ),
        (
            "assistantResponseEvent",
            json!({"content":" café 日本 😀"}).to_string(),
        ),
        (
            "toolUseEvent",
            json!({"name":"read","toolUseId":"tooluse_1"}).to_string(),
        ),
        (
            "toolUseEvent",
            json!({"input":"{\"path\":\"C:\\","name":"read","toolUseId":"tooluse_1"}).to_string(),
        ),
        (
            "toolUseEvent",
            json!({"input":"\\tmp\\\\x\\u00","name":"read","toolUseId":"tooluse_1"}).to_string(),
        ),
        (
            "toolUseEvent",
            json!({"input":"e9\"}","name":"read","toolUseId":"tooluse_1"}).to_string(),
        ),
        (
            "toolUseEvent",
            json!({"name":"read","stop":true,"toolUseId":"tooluse_1"}).to_string(),
        ),
        (
            "meteringEvent",
            json!({"unit":"credit","unitPlural":"credits","usage":0.0148}).to_string(),
        ),
        (
            "contextUsageEvent",
            json!({"contextUsagePercentage":2.5}).to_string(),
        ),
    ];
    let mut bytes = Vec::new();
    for (t, p) in &events {
        bytes.extend_from_slice(&smithy_frame(t, p));
    }
    let expected = events.into_iter().map(|(t, p)| (t.to_owned(), p)).collect();
    (bytes, expected)
}

fn summary(frames: &[Frame]) -> Vec<(String, String)> {
    frames
        .iter()
        .map(|f| {
            (
                f.header_str(":event-type").unwrap_or_default().to_owned(),
                String::from_utf8(f.payload.to_vec()).unwrap(),
            )
        })
        .collect()
}

fn decode_chunks(chunks: &[&[u8]]) -> Vec<Frame> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for c in chunks {
        d.push(c);
        while let Some(f) = d.next_frame().unwrap() {
            out.push(f);
        }
    }
    d.finish().unwrap();
    out
}

#[test]
fn decodes_a_multi_frame_capture_at_every_split_point() {
    let (bytes, expected) = capture();
    for split in 0..=bytes.len() {
        let frames = decode_chunks(&[&bytes[..split], &bytes[split..]]);
        assert_eq!(summary(&frames), expected, "split at {split}");
    }
    // and one byte at a time
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(summary(&decode_chunks(&singles)), expected);
}

#[test]
fn agrees_with_aws_smithy_eventstream_both_ways() {
    use kiro_gateway::kiro::eventstream::encode_frame;
    // every header type, encoded by the AWS crate, decoded by ours
    use aws_smithy_types::event_stream::{Header as SH, HeaderValue as SV, Message};
    let msg = Message::new(Bytes::from_static(b"{\"k\":1}"))
        .add_header(SH::new("b1", SV::Bool(true)))
        .add_header(SH::new("b0", SV::Bool(false)))
        .add_header(SH::new("i8", SV::Byte(-7)))
        .add_header(SH::new("i16", SV::Int16(-1234)))
        .add_header(SH::new("i32", SV::Int32(123_456)))
        .add_header(SH::new("i64", SV::Int64(-9_876_543_210)))
        .add_header(SH::new(
            "bytes",
            SV::ByteArray(Bytes::from_static(&[0, 1, 2, 255])),
        ))
        .add_header(SH::new("str", SV::String("ünïcode".into())))
        .add_header(SH::new(
            "ts",
            SV::Timestamp(aws_smithy_types::DateTime::from_millis(1_700_000_000_123)),
        ))
        .add_header(SH::new(
            "uuid",
            SV::Uuid(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff),
        ));
    let mut theirs = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&msg, &mut theirs).unwrap();
    let frames = decode_chunks(&[&theirs]);
    let ours_headers = vec![
        Header::new("b1", HeaderValue::Bool(true)),
        Header::new("b0", HeaderValue::Bool(false)),
        Header::new("i8", HeaderValue::Byte(-7)),
        Header::new("i16", HeaderValue::Int16(-1234)),
        Header::new("i32", HeaderValue::Int32(123_456)),
        Header::new("i64", HeaderValue::Int64(-9_876_543_210)),
        Header::new(
            "bytes",
            HeaderValue::ByteArray(Bytes::from_static(&[0, 1, 2, 255])),
        ),
        Header::new("str", HeaderValue::String("ünïcode".into())),
        Header::new("ts", HeaderValue::Timestamp(1_700_000_000_123)),
        Header::new(
            "uuid",
            HeaderValue::Uuid(0x0011_2233_4455_6677_8899_aabb_ccdd_eeffu128.to_be_bytes()),
        ),
    ];
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].headers, ours_headers);
    assert_eq!(&frames[0].payload[..], b"{\"k\":1}");
    // our encoder produces the same bytes, and the AWS decoder reads ours
    let ours = encode_frame(&ours_headers, b"{\"k\":1}");
    assert_eq!(&ours[..], &theirs[..]);
    let back = aws_smithy_eventstream::frame::read_message_from(ours).unwrap();
    assert_eq!(back.headers().len(), 10);
}

// ---------------------------------------------------------------------------------------------
// the client service against the mock

async fn call(
    mock: &MockKiro,
    token: &Secret,
    body: Bytes,
) -> Result<kiro_gateway::kiro::GenerateResponse, Error> {
    let mut svc = client(mock);
    let mut req = GenerateRequest::new(body);
    req.token = Some(token.clone());
    req.attempt = 2;
    req.max_attempts = 3;
    svc.ready().await?.call(req).await
}

async fn started() -> (MockKiro, Secret) {
    let mock = MockKiro::start(MockConfig::default()).await.unwrap();
    let tm = env_manager(&mock);
    let token = tm.access_token().await.unwrap().token;
    (mock, token)
}

fn texts(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Text { content } => Some(content.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn split_utf8_and_repeated_chunks_survive_the_wire() {
    let (mock, token) = started().await;
    let deltas = ["né", "é", "é", "日本語", "😀😀", "😀😀", "!"];
    let mut script = Script::new().metadata();
    for d in deltas {
        script = script.event(kiro_gateway::mock::MockEvent::Text(d.into()));
    }
    // one to three bytes per write: every multi-byte character is cut somewhere
    mock.push_reply(Reply::Stream(script.end().max_write(3)));
    let resp = call(&mock, &token, simple_body("hi", None)).await.unwrap();
    assert_eq!(
        resp.headers["content-type"],
        "application/vnd.amazon.eventstream"
    );
    let (events, err) = collect_events(resp.events).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(texts(&events), deltas);
}

#[tokio::test]
async fn streamed_tool_call_is_reassembled_to_exact_json() {
    let (mock, token) = started().await;
    let args = r#"{"path":"C:\\Users\\me\\notes \"v2\".txt","content":"line1\nline2\ttab é \ud83d\ude00","n":[1,2.5,null,true]}"#;
    mock.push_reply(Reply::Stream(
        Script::new()
            .text_deltas("Writing the file.", 5)
            .tool_call("tooluse_abc", "write_file", args)
            .tool_call("tooluse_def", "write_file", args)
            .end(),
    ));
    let resp = call(&mock, &token, simple_body("write it", None))
        .await
        .unwrap();
    let (events, err) = collect_events(resp.events).await;
    assert!(err.is_none(), "{err:?}");
    let mut asm = ToolCallAssembler::new();
    for e in &events {
        if let Event::ToolUse(t) = e {
            asm.push(t);
        }
    }
    let calls = asm.into_calls();
    assert_eq!(calls.len(), 2, "two calls with distinct ids stay two");
    for c in &calls {
        assert_eq!(c.arguments, args);
        assert!(c.stopped);
        assert_eq!(c.name, "write_file");
        let v = c.parsed_arguments().unwrap();
        assert_eq!(v["path"], "C:\\Users\\me\\notes \"v2\".txt");
        assert_eq!(v["content"], "line1\nline2\ttab é 😀");
    }
    assert_eq!(calls[0].tool_use_id, "tooluse_abc");
    assert_eq!(calls[1].tool_use_id, "tooluse_def");
}

#[tokio::test]
async fn sends_the_kiro_headers() {
    let (mock, token) = started().await;
    let resp = call(&mock, &token, simple_body("hi", None)).await.unwrap();
    let (events, err) = collect_events(resp.events).await;
    assert!(err.is_none());
    assert!(texts(&events).concat().contains("You said: hi"));
    let rec = mock.requests_to("/generateAssistantResponse");
    let h = &rec[0].headers;
    assert_eq!(h["authorization"], format!("Bearer {}", token.expose()));
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["amz-sdk-request"], "attempt=2; max=3");
    assert_eq!(h["x-amzn-codewhisperer-optout"], "true");
    assert_eq!(h["x-amzn-kiro-agent-mode"], "vibe");
    assert!(h["user-agent"]
        .to_str()
        .unwrap()
        .ends_with("KiroIDE-0.7.45-test-fingerprint"));
    assert!(h.contains_key("amz-sdk-invocation-id"));
    assert!(
        !h.contains_key("connection"),
        "connections are pooled, not closed"
    );
}

#[tokio::test]
async fn error_statuses_carry_the_service_message() {
    let (mock, token) = started().await;
    mock.push_reply(Reply::throttled());
    match call(&mock, &token, simple_body("hi", None)).await {
        Err(Error::Status(s)) => {
            assert_eq!(s.status, 429);
            assert_eq!(s.reason.as_deref(), Some("USER_REQUEST_RATE_EXCEEDED"));
            assert!(s.is_retryable());
        }
        other => panic!("expected 429, got {:?}", other.err()),
    }
    // the mock validates bodies the way the service does
    let bad = Bytes::from_static(br#"{"conversationState":{"conversationId":"c","chatTriggerType":"MANUAL","currentMessage":{"userInputMessage":{"content":"","modelId":"claude-sonnet-4.5","origin":"AI_EDITOR"}}}}"#);
    match call(&mock, &token, bad).await {
        Err(Error::Status(s)) => {
            assert_eq!(s.status, 400);
            assert_eq!(s.message, "Improperly formed request.");
            assert!(!s.is_retryable());
        }
        other => panic!("expected 400, got {:?}", other.err()),
    }
    // a dead token
    match call(&mock, &Secret::new("nope"), simple_body("hi", None)).await {
        Err(Error::Status(s)) => assert!(s.is_invalid_token()),
        other => panic!("expected 403, got {:?}", other.err()),
    }
}

async fn failure_of(fault: Fault) -> (Vec<Event>, Option<Error>) {
    let (mock, token) = started().await;
    mock.push_reply(Reply::Stream(
        Script::text("one two three four five", 4).fault(fault),
    ));
    let resp = call(&mock, &token, simple_body("hi", None)).await.unwrap();
    collect_events(resp.events).await
}

#[tokio::test]
async fn every_mid_stream_failure_is_an_error_not_an_end() {
    let (events, err) = failure_of(Fault::ResetAt(3)).await;
    assert!(matches!(err, Some(Error::Body(_))), "reset: {err:?}");
    assert_eq!(
        texts(&events).concat(),
        "one two ",
        "frames before the reset arrive intact"
    );

    let (events, err) = failure_of(Fault::BadCrcAt(2)).await;
    assert!(matches!(err, Some(Error::Decode(_))), "bad crc: {err:?}");
    assert_eq!(
        texts(&events).concat(),
        "one ",
        "nothing of the corrupt frame is forwarded"
    );

    let (_, err) = failure_of(Fault::ExceptionAt {
        frame: 2,
        kind: "InternalServerException".into(),
        message: "boom".into(),
    })
    .await;
    let exc = err.as_ref().and_then(Error::stream_exception).cloned();
    assert_eq!(
        exc.map(|e| (e.kind, e.message)),
        Some(("InternalServerException".into(), "boom".into()))
    );

    let (events, err) = failure_of(Fault::TruncateBeforeEnd).await;
    assert!(matches!(err, Some(Error::Truncated)), "truncation: {err:?}");
    assert_eq!(texts(&events).concat(), "one two three four five");
}

#[tokio::test]
async fn dropping_the_event_stream_closes_the_upstream_body() {
    let (mock, token) = started().await;
    mock.push_reply(Reply::Stream(
        Script::text(&"x".repeat(400), 1).write_pause(Duration::from_millis(2)),
    ));
    let resp = call(&mock, &token, simple_body("hi", None)).await.unwrap();
    let mut events = resp.events;
    let first = events.next().await;
    assert!(matches!(first, Some(Ok(_))));
    assert_eq!(mock.open_streams(), 1);
    drop(events);
    common::eventually(
        "the mock to see the connection go away",
        Duration::from_millis(500),
        || mock.open_streams() == 0,
    )
    .await;
    assert_eq!(
        mock.open_streams(),
        0,
        "the mock saw the connection go away"
    );
}

#[tokio::test]
async fn lists_models_across_pages() {
    let mock = MockKiro::start(MockConfig {
        page_size: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    let tm = env_manager(&mock);
    let token = tm.access_token().await.unwrap().token;
    let list = client(&mock)
        .list_models(&token, tm.profile_arn_for_requests().as_deref())
        .await
        .unwrap();
    let ids: Vec<_> = list.models.iter().map(|m| m.model_id.as_str()).collect();
    assert_eq!(
        ids,
        mock.config()
            .models
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    assert_eq!(mock.requests_to("/ListAvailableModels").len(), 3);
    // desktop accounts send the ARN the refresh returned, URL-encoded
    let q = &mock.requests_to("/ListAvailableModels")[0].path;
    assert!(q.contains("origin=AI_EDITOR"));
    assert!(q.contains("profileArn=arn%3Aaws%3Acodewhisperer"), "{q}");
}

// ---------------------------------------------------------------------------------------------
// tokens

#[tokio::test]
async fn refreshes_ahead_of_expiry_but_not_before() {
    let mock = MockKiro::start(MockConfig {
        initial_access_token: Some("file-access".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // valid for two hours: used as is
    let path = common::creds_file(
        dir.path(),
        json!({"accessToken": "file-access", "refreshToken": "mock-refresh-0", "expiresAt": in_secs(7200)}),
    );
    let settings = CredentialSettings {
        creds_file: Some(path.clone()),
        ..Default::default()
    };
    let tm = manager(&mock, settings.clone(), TokenConfig::default());
    assert_eq!(
        tm.access_token().await.unwrap().token.expose(),
        "file-access"
    );
    assert_eq!(mock.desktop_refreshes(), 0);
    // expiring within the margin: refreshed first
    common::creds_file(
        dir.path(),
        json!({"accessToken": "file-access", "refreshToken": "mock-refresh-0", "expiresAt": in_secs(30)}),
    );
    let tm = manager(&mock, settings, TokenConfig::default());
    let t = tm.access_token().await.unwrap();
    assert_eq!(t.token.expose(), "mock-access-1");
    assert_eq!(mock.desktop_refreshes(), 1);
    // and then not again while fresh
    for _ in 0..5 {
        tm.access_token().await.unwrap();
    }
    assert_eq!(mock.desktop_refreshes(), 1);
}

#[tokio::test]
async fn short_lived_tokens_do_not_cause_a_refresh_per_request() {
    // 10-minute tokens with a 15-minute margin: the original refreshed before every request
    let mock = MockKiro::start(MockConfig {
        expires_in: 600,
        ..Default::default()
    })
    .await
    .unwrap();
    let tm = manager(
        &mock,
        CredentialSettings {
            refresh_token: Some(Secret::new("mock-refresh-0")),
            ..Default::default()
        },
        TokenConfig {
            refresh_margin: Duration::from_secs(900),
            ..Default::default()
        },
    );
    for _ in 0..10 {
        tm.access_token().await.unwrap();
    }
    assert_eq!(mock.desktop_refreshes(), 1);
}

#[tokio::test]
async fn fifty_concurrent_callers_cause_exactly_one_refresh() {
    let mock = MockKiro::start(MockConfig {
        refresh_delay: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let tm = env_manager(&mock);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let tm = tm.clone();
            tokio::spawn(
                async move { tm.access_token().await.map(|t| t.token.expose().to_owned()) },
            )
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "mock-access-1");
    }
    assert_eq!(mock.desktop_refreshes(), 1);
    assert_eq!(tm.refresh_count(), 1);
}

#[tokio::test]
async fn a_403_with_a_stale_token_does_not_refresh_twice() {
    let mock = MockKiro::start(MockConfig {
        refresh_delay: Duration::from_millis(50),
        ..Default::default()
    })
    .await
    .unwrap();
    let tm = env_manager(&mock);
    let stale = tm.access_token().await.unwrap();
    assert_eq!(mock.desktop_refreshes(), 1);
    // eight requests fail with the same token at once: one refresh between them
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (tm, stale) = (tm.clone(), stale.clone());
            tokio::spawn(async move {
                tm.force_refresh(&stale)
                    .await
                    .unwrap()
                    .token
                    .expose()
                    .to_owned()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), "mock-access-2");
    }
    assert_eq!(mock.desktop_refreshes(), 2);
    // a late 403 for the old token gets the new one, no third refresh
    let again = tm.force_refresh(&stale).await.unwrap();
    assert_eq!(again.token.expose(), "mock-access-2");
    assert_eq!(mock.desktop_refreshes(), 2);
}

#[tokio::test]
async fn rotation_is_persisted_to_the_json_file() {
    let mock = MockKiro::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = common::creds_file(
        dir.path(),
        json!({"accessToken": "old", "refreshToken": "mock-refresh-0", "expiresAt": in_secs(-60),
               "region": "us-east-1", "provider": "Github", "authMethod": "social", "startUrl": "x"}),
    );
    let tm = manager(
        &mock,
        CredentialSettings {
            creds_file: Some(path.clone()),
            ..Default::default()
        },
        TokenConfig::default(),
    );
    assert_eq!(tm.auth_kind(), AuthKind::Desktop);
    tm.access_token().await.unwrap();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["accessToken"], "mock-access-1");
    assert_eq!(v["refreshToken"], "mock-refresh-1");
    assert_eq!(v["refreshToken"], mock.current_refresh_token());
    assert_eq!(v["profileArn"], mock.config().profile_arn);
    assert!(v["expiresAt"].as_str().unwrap().ends_with('Z'));
    for k in ["provider", "authMethod", "startUrl", "region"] {
        assert!(v.get(k).is_some(), "unknown field {k} kept");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // a restart reads the rotated token, and the mock accepts it (the old one is dead)
    let tm2 = manager(
        &mock,
        CredentialSettings {
            creds_file: Some(path.clone()),
            ..Default::default()
        },
        TokenConfig::default(),
    );
    mock.revoke_access_tokens();
    let stale = tm2.access_token().await.unwrap();
    let fresh = tm2.force_refresh(&stale).await.unwrap();
    assert_eq!(fresh.token.expose(), "mock-access-2");
}

#[tokio::test]
async fn rotation_is_persisted_to_the_kiro_cli_database() {
    let mock = MockKiro::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data.sqlite3");
    make_cli_db(
        &db,
        json!({"access_token": "old", "refresh_token": "mock-refresh-0", "expires_at": in_secs(-5),
               "region": "us-east-1", "scopes": ["codewhisperer:completions"], "start_url": "https://x"}),
    );
    assert_eq!(SQLITE_TOKEN_KEYS[1], "kirocli:odic:token");
    let tm = manager(
        &mock,
        CredentialSettings {
            cli_db_file: Some(db.clone()),
            ..Default::default()
        },
        TokenConfig::default(),
    );
    assert_eq!(tm.auth_kind(), AuthKind::Oidc);
    assert_eq!(
        tm.access_token().await.unwrap().token.expose(),
        "mock-access-1"
    );
    assert_eq!(mock.oidc_refreshes(), 1);
    let v = cli_token(&db);
    assert_eq!(v["access_token"], "mock-access-1");
    assert_eq!(v["refresh_token"], "mock-refresh-1");
    assert_eq!(
        v["scopes"],
        json!(["codewhisperer:completions"]),
        "other fields kept"
    );
    assert_eq!(v["start_url"], "https://x");
    assert_eq!(v["region"], "us-east-1");
}

#[tokio::test]
async fn adopts_a_token_another_program_refreshed_instead_of_refreshing() {
    let mock = MockKiro::start(MockConfig {
        initial_access_token: Some("ide-access".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = common::creds_file(
        dir.path(),
        json!({"accessToken": "old", "refreshToken": "mock-refresh-0", "expiresAt": in_secs(10)}),
    );
    let tm = manager(
        &mock,
        CredentialSettings {
            creds_file: Some(path.clone()),
            ..Default::default()
        },
        TokenConfig::default(),
    );
    // the IDE refreshes and rewrites the file before we need a token
    common::creds_file(
        dir.path(),
        json!({"accessToken": "ide-access", "refreshToken": "mock-refresh-0", "expiresAt": in_secs(3600)}),
    );
    assert_eq!(
        tm.access_token().await.unwrap().token.expose(),
        "ide-access"
    );
    assert_eq!(mock.desktop_refreshes(), 0);
}

#[tokio::test]
async fn oidc_never_sends_a_profile_arn() {
    let mock = MockKiro::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = common::creds_file(
        dir.path(),
        json!({"refreshToken": "mock-refresh-0", "clientId": "mock-client-id",
               "clientSecret": "mock-client-secret", "region": "us-east-1",
               "profileArn": "arn:aws:codewhisperer:us-east-1:1:profile/SHOULD-NOT-BE-SENT"}),
    );
    let tm = manager(
        &mock,
        CredentialSettings {
            creds_file: Some(path),
            ..Default::default()
        },
        TokenConfig::default(),
    );
    assert_eq!(tm.auth_kind(), AuthKind::Oidc);
    let token = tm.access_token().await.unwrap().token;
    assert_eq!(mock.oidc_refreshes(), 1);
    let refresh = &mock.requests_to("/token")[0].body;
    assert_eq!(refresh["grantType"], "refresh_token");
    assert_eq!(refresh["clientId"], "mock-client-id");
    assert!(refresh.get("profileArn").is_none());
    assert_eq!(tm.profile_arn_for_requests(), None);
    client(&mock)
        .list_models(&token, tm.profile_arn_for_requests().as_deref())
        .await
        .unwrap();
    assert!(!mock.requests_to("/ListAvailableModels")[0]
        .path
        .contains("profileArn"));
    // and the generate call goes through (the mock, like the service, answers 403 otherwise)
    let resp = call(
        &mock,
        &token,
        simple_body("hi", tm.profile_arn_for_requests()),
    )
    .await;
    assert!(resp.is_ok());
    let with_arn = call(&mock, &token, simple_body("hi", tm.profile_arn())).await;
    assert!(matches!(with_arn, Err(Error::Status(s)) if s.status == 403));
}

#[tokio::test]
async fn a_revoked_refresh_token_names_the_source_and_the_fix() {
    let mock = MockKiro::start(MockConfig::default()).await.unwrap();
    mock.revoke_refresh_token();
    let dir = tempfile::tempdir().unwrap();
    let path = common::creds_file(dir.path(), json!({"refreshToken": "mock-refresh-0"}));
    let tm = manager(
        &mock,
        CredentialSettings {
            creds_file: Some(path.clone()),
            ..Default::default()
        },
        TokenConfig::default(),
    );
    let err = tm.access_token().await.unwrap_err();
    assert!(
        matches!(err, AuthError::Refused { status: 401, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("KIRO_CREDS_FILE"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("sign in to the Kiro IDE again"), "{text}");
    assert!(!text.contains("mock-refresh-0"), "never the secret: {text}");
    // within the cool-down a second caller does not hit the auth service again
    let _ = tm.access_token().await.unwrap_err();
    assert_eq!(mock.desktop_refreshes(), 1);
}

#[tokio::test]
async fn unreachable_upstream_is_a_connect_error() {
    // a port nothing listens on
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut cfg = kiro_gateway::kiro::KiroClientConfig::new(format!("http://{addr}"));
    cfg.headers = kiro_gateway::kiro::KiroHeaders::new("t");
    let mut svc = kiro_gateway::kiro::KiroClient::new(http(), cfg);
    let mut req = GenerateRequest::new(simple_body("hi", None));
    req.token = Some(Secret::new("t"));
    let err = svc.ready().await.unwrap().call(req).await.err().unwrap();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.is_retryable());
    let _ = BytesMut::new();
}
