//! `/metrics` end to end: exact counts per label after a known mix of requests, the access
//! rules, named client keys and their rate limits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use bytes::Bytes;
use common::{sample, start, start_with, Running};
use http::StatusCode;
use http_body_util::Full;
use kiro_gateway::config::ClientKeyConfig;
use kiro_gateway::mock::script::DEFAULT_CREDITS;
use kiro_gateway::mock::{MockConfig, Reply};
use serde_json::{json, Value};

const BAD_TOKEN: &str =
    r#"{"message":"The bearer token included in the request is invalid.","reason":null}"#;

async fn scrape(r: &Running) -> String {
    let (s, h, b) = r.send(r.req("GET", "/metrics", "")).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    String::from_utf8(b.to_vec()).unwrap()
}

/// The usage an answer reported to its client: (input tokens, output tokens, credits).
fn reported_usage(body: &Bytes, stream: bool) -> (u64, u64, f64) {
    let usages: Vec<Value> = if stream {
        String::from_utf8_lossy(body)
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| v.get("usage").filter(|u| !u.is_null()).cloned())
            .collect()
    } else {
        vec![serde_json::from_slice::<Value>(body).unwrap()["usage"].clone()]
    };
    let u = usages.last().expect("a usage object");
    let input = u["prompt_tokens"]
        .as_u64()
        .or(u["input_tokens"].as_u64())
        .unwrap();
    let output = u["completion_tokens"]
        .as_u64()
        .or(u["output_tokens"].as_u64())
        .unwrap();
    (input, output, u["kiro"]["credits"].as_f64().unwrap())
}

fn openai(stream: bool) -> String {
    json!({"model": "claude-sonnet-4-5", "stream": stream,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Hello there"}]})
    .to_string()
}

fn anthropic(stream: bool) -> String {
    json!({"model": "claude-sonnet-4-5", "stream": stream, "max_tokens": 100,
        "messages": [{"role": "user", "content": "Hello there"}]})
    .to_string()
}

#[tokio::test]
async fn counters_and_histograms_equal_exactly_what_was_sent() {
    let r = start().await;
    let mut usage = (0u64, 0u64, 0f64);
    let mut add = |u: (u64, u64, f64)| {
        usage.0 += u.0;
        usage.1 += u.1;
        usage.2 += u.2;
    };
    // 3 + 2 OpenAI, 2 + 2 Anthropic, all answered
    for (path, body, stream, n) in [
        ("/v1/chat/completions", openai(false), false, 3),
        ("/v1/chat/completions", openai(true), true, 2),
        ("/v1/messages", anthropic(false), false, 2),
        ("/v1/messages", anthropic(true), true, 2),
    ] {
        for _ in 0..n {
            let (s, _, b) = r.send(r.req("POST", path, body.clone())).await;
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
            add(reported_usage(&b, stream));
        }
    }
    // one throttled attempt, retried
    r.mock.push_reply(Reply::throttled());
    let (s, _, b) = r
        .send(r.req("POST", "/v1/chat/completions", openai(false)))
        .await;
    assert_eq!(s, 200);
    add(reported_usage(&b, false));
    // one stale token: refreshed, retried
    r.mock.fail_next(1, 403, BAD_TOKEN);
    let (s, _, b) = r.send(r.req("POST", "/v1/messages", anthropic(true))).await;
    assert_eq!(s, 200);
    add(reported_usage(&b, true));
    // one upstream error the client sees
    r.mock.fail_next(
        1,
        400,
        r#"{"message":"Improperly formed request.","reason":null}"#,
    );
    let (error_status, _, _) = r
        .send(r.req("POST", "/v1/chat/completions", openai(false)))
        .await;
    assert!(error_status.is_client_error(), "{error_status}");
    let error_status = error_status.as_u16().to_string();

    // the other /v1 routes are counted under their own route label
    for path in [
        "/v1/models",
        "/v1/models/claude-sonnet-4-5",
        "/v1/models/nope",
    ] {
        r.send(r.req("GET", path, "")).await;
    }

    let text = scrape(&r).await;
    let models = [("route", "/v1/models"), ("status", "200")];
    assert_eq!(sample(&text, "kiro_gateway_requests_total", &models), 1.0);
    let one = [("route", "/v1/models/{id}")];
    assert_eq!(sample(&text, "kiro_gateway_requests_total", &one), 2.0);
    let missing = [("route", "/v1/models/{id}"), ("status", "404")];
    assert_eq!(sample(&text, "kiro_gateway_requests_total", &missing), 1.0);
    let chat = [("route", "/v1/chat/completions"), ("dialect", "openai")];
    let messages = [("route", "/v1/messages"), ("dialect", "anthropic")];
    let base = [
        ("model", "claude-sonnet-4.5"),
        ("account", "default"),
        ("client", "default"),
    ];
    let with = |route: &[(&'static str, &'static str)], status: &'static str| {
        let mut l: Vec<(&str, &str)> = route.to_vec();
        l.extend(base);
        l.push(("status", status));
        l
    };
    let requests = "kiro_gateway_requests_total";
    assert_eq!(sample(&text, requests, &with(&chat, "200")), 6.0, "{text}");
    assert_eq!(sample(&text, requests, &with(&messages, "200")), 5.0);
    let mut err = chat.to_vec();
    err.push(("status", error_status.as_str()));
    assert_eq!(sample(&text, requests, &err), 1.0, "{text}");
    assert_eq!(sample(&text, requests, &[]), 12.0 + 3.0);
    for h in [
        "kiro_gateway_request_duration_seconds_count",
        "kiro_gateway_time_to_first_byte_seconds_count",
    ] {
        assert_eq!(sample(&text, h, &chat), 7.0, "{h}");
        assert_eq!(sample(&text, h, &messages), 5.0, "{h}");
    }
    assert_eq!(sample(&text, "kiro_gateway_streams_in_flight", &[]), 0.0);
    // every call that reached the mock, and the two retries by cause
    assert_eq!(
        sample(&text, "kiro_gateway_upstream_attempts_total", &[]),
        r.mock.generate_calls() as f64
    );
    assert_eq!(r.mock.generate_calls(), 14);
    let retries = "kiro_gateway_upstream_retries_total";
    assert_eq!(sample(&text, retries, &[("cause", "throttle")]), 1.0);
    assert_eq!(sample(&text, retries, &[("cause", "invalid_token")]), 1.0);
    assert_eq!(sample(&text, retries, &[]), 2.0);
    // the first token and the forced one
    let refreshes = sample(
        &text,
        "kiro_gateway_token_refreshes_total",
        &[("account", "default")],
    );
    assert_eq!(refreshes, r.gateway.parts.tokens.refresh_count() as f64);
    assert!(refreshes >= 2.0, "{refreshes}");
    assert_eq!(
        sample(&text, "kiro_gateway_token_refresh_failures_total", &[]),
        0.0
    );
    // tokens and credits: the sums of what the 11 answers told their clients
    let by = [("account", "default"), ("model", "claude-sonnet-4.5")];
    assert_eq!(
        sample(&text, "kiro_gateway_input_tokens_total", &by),
        usage.0 as f64
    );
    assert_eq!(
        sample(&text, "kiro_gateway_output_tokens_total", &by),
        usage.1 as f64
    );
    let credits = sample(&text, "kiro_gateway_credits", &by);
    assert!((credits - usage.2).abs() < 1e-9, "{credits} vs {}", usage.2);
    assert!((credits - 11.0 * DEFAULT_CREDITS).abs() < 1e-9, "{credits}");
}

#[tokio::test]
async fn metrics_are_off_on_a_public_host_without_a_key_and_need_the_key_when_set() {
    // the harness listens on 127.0.0.1 whatever `host` says: the config decides the access
    let off = start_with(MockConfig::default(), |c| c.host = "0.0.0.0".into()).await;
    let (s, _, _) = off.send(off.req("GET", "/metrics", "")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let keyed = start_with(MockConfig::default(), |c| {
        c.host = "0.0.0.0".into();
        c.metrics_api_key = Some("metrics-secret".into());
    })
    .await;
    let (s, _, _) = keyed.send(keyed.req("GET", "/metrics", "")).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the proxy key is not the metrics key"
    );
    let mut req = keyed.req("GET", "/metrics", "");
    req.headers_mut()
        .insert("authorization", "Bearer metrics-secret".parse().unwrap());
    let (s, _, b) = keyed.send(req).await;
    assert_eq!(s, 200);
    assert!(String::from_utf8_lossy(&b).contains("kiro_gateway_token_refreshes_total"));

    let public = start_with(MockConfig::default(), |c| {
        c.host = "0.0.0.0".into();
        c.metrics_public = true;
    })
    .await;
    let mut req = public.req("GET", "/metrics", "");
    req.headers_mut().remove("authorization");
    assert_eq!(public.send(req).await.0, 200);

    // loopback: open
    let local = start().await;
    let mut req = local.req("GET", "/metrics", "");
    req.headers_mut().remove("authorization");
    assert_eq!(local.send(req).await.0, 200);
}

fn keyed_req(
    r: &Running,
    path: &str,
    header: &str,
    key: &str,
    body: String,
) -> http::Request<Full<Bytes>> {
    let mut req = r.req("POST", path, body);
    req.headers_mut().remove("authorization");
    let value = if header == "authorization" {
        format!("Bearer {key}")
    } else {
        key.to_owned()
    };
    req.headers_mut().insert(
        http::HeaderName::from_bytes(header.as_bytes()).unwrap(),
        value.parse().unwrap(),
    );
    req
}

fn client_key(
    name: &str,
    key: Option<&str>,
    sha256: Option<&str>,
    limit: Option<u32>,
) -> ClientKeyConfig {
    ClientKeyConfig {
        name: name.into(),
        key: key.map(Into::into),
        sha256: sha256.map(Into::into),
        rate_limit_per_minute: limit,
    }
}

#[tokio::test]
async fn named_client_keys_work_and_label_their_requests_apart() {
    use sha2::Digest;
    let bob_hash = hex(&sha2::Sha256::digest(b"bob-key"));
    let r = start_with(MockConfig::default(), |c| {
        c.api_keys = vec![
            client_key("alice", Some("alice-key"), None, None),
            client_key("bob", None, Some(&bob_hash), None),
        ];
    })
    .await;
    for _ in 0..2 {
        let req = keyed_req(
            &r,
            "/v1/chat/completions",
            "authorization",
            "alice-key",
            openai(false),
        );
        assert_eq!(r.send(req).await.0, 200);
    }
    let req = keyed_req(&r, "/v1/messages", "x-api-key", "bob-key", anthropic(false));
    assert_eq!(r.send(req).await.0, 200);
    // PROXY_API_KEY still works, as client "default"
    assert_eq!(
        r.send(r.req("POST", "/v1/chat/completions", openai(false)))
            .await
            .0,
        200
    );
    let req = keyed_req(
        &r,
        "/v1/chat/completions",
        "authorization",
        "mallory-key",
        openai(false),
    );
    let (s, _, b) = r.send(req).await;
    assert_eq!(s, 401);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let req = keyed_req(
        &r,
        "/v1/messages",
        "x-api-key",
        "alice-key-x",
        anthropic(false),
    );
    let (s, _, b) = r.send(req).await;
    assert_eq!(s, 401);
    assert_eq!(
        serde_json::from_slice::<Value>(&b).unwrap()["type"],
        "error"
    );

    let text = scrape(&r).await;
    let n = "kiro_gateway_requests_total";
    assert_eq!(
        sample(&text, n, &[("client", "alice"), ("status", "200")]),
        2.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            n,
            &[
                ("client", "bob"),
                ("route", "/v1/messages"),
                ("status", "200")
            ]
        ),
        1.0
    );
    assert_eq!(
        sample(&text, n, &[("client", "default"), ("status", "200")]),
        1.0
    );
    assert_eq!(
        sample(&text, n, &[("client", "none"), ("status", "401")]),
        2.0
    );
    assert!(!text.contains("alice-key") && !text.contains("bob-key"));
    assert_eq!(r.mock.generate_calls(), 4);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_rate_limited_key_gets_429_with_retry_after_in_both_dialects_and_nothing_goes_upstream() {
    let r = start_with(MockConfig::default(), |c| {
        c.api_keys = vec![client_key("slow", Some("slow-key"), None, Some(2))];
    })
    .await;
    for _ in 0..2 {
        let req = keyed_req(
            &r,
            "/v1/chat/completions",
            "authorization",
            "slow-key",
            openai(false),
        );
        assert_eq!(r.send(req).await.0, 200);
    }
    let req = keyed_req(
        &r,
        "/v1/chat/completions",
        "authorization",
        "slow-key",
        openai(true),
    );
    let (s, h, b) = r.send(req).await;
    assert_eq!(s, 429);
    let wait: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("slow"));

    let req = keyed_req(
        &r,
        "/v1/messages",
        "x-api-key",
        "slow-key",
        anthropic(false),
    );
    let (s, h, b) = r.send(req).await;
    assert_eq!(s, 429);
    assert!(h.contains_key("retry-after"));
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");

    // another key is not limited by this one's bucket
    assert_eq!(
        r.send(r.req("POST", "/v1/chat/completions", openai(false)))
            .await
            .0,
        200
    );
    assert_eq!(r.mock.generate_calls(), 3);
    let text = scrape(&r).await;
    assert_eq!(
        sample(
            &text,
            "kiro_gateway_requests_total",
            &[("client", "slow"), ("status", "429")]
        ),
        2.0,
        "{text}"
    );
}
