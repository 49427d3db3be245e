//! Several Kiro accounts end to end, each on its own mock upstream: failover past a throttled
//! and an exhausted account, the states `/health/accounts` shows, the metrics per account,
//! conversation stickiness, the all-down answers, and the admin reset.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::{sample, sse_payloads, start_with, Running};
use http::StatusCode;
use kiro_gateway::config::{AccountConfig, Config};
use kiro_gateway::mock::{MockConfig, MockKiro, Reply};
use kiro_gateway::Secret;
use serde_json::{json, Value};

const QUOTA: &str = r#"{"message":"You have reached the limit.","reason":"MONTHLY_REQUEST_COUNT"}"#;
const THROTTLED: &str = r#"{"message":"Rate exceeded","reason":"USER_REQUEST_RATE_EXCEEDED"}"#;

/// An `[[accounts]]` table for an account served by `mock`.
fn account_on(name: &str, mock: &MockKiro) -> AccountConfig {
    let url = mock.url();
    AccountConfig {
        name: name.into(),
        refresh_token: Some(Secret::new(mock.config().initial_refresh_token.clone())),
        kiro_api_url: Some(url.clone()),
        kiro_management_url: Some(url.clone()),
        kiro_desktop_auth_url: Some(url.clone()),
        kiro_oidc_url: Some(url),
        ..Default::default()
    }
}

fn mock_cfg(profile: &str) -> MockConfig {
    MockConfig {
        profile_arn: format!("arn:aws:codewhisperer:us-east-1:000000000000:profile/{profile}"),
        ..Default::default()
    }
}

/// The gateway with the account `default` on its own mock and one more account per extra mock.
async fn gateway(
    default_profile: &str,
    extra: &[(&str, &MockKiro)],
    tweak: impl FnOnce(&mut Config),
) -> Running {
    let extra: Vec<AccountConfig> = extra.iter().map(|(n, m)| account_on(n, m)).collect();
    start_with(mock_cfg(default_profile), move |cfg| {
        cfg.accounts = extra;
        cfg.admin_api_key = Some(Secret::new("admin-key"));
        tweak(cfg);
    })
    .await
}

async fn accounts(r: &Running) -> Vec<Value> {
    let (s, _, b) = r.send(r.req("GET", "/health/accounts", "")).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let v: Value = serde_json::from_slice(&b).unwrap();
    v["accounts"].as_array().unwrap().clone()
}

fn state_of<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter().find(|a| a["name"] == name).unwrap()
}

async fn scrape(r: &Running) -> String {
    let (s, _, b) = r.send(r.req("GET", "/metrics", "")).await;
    assert_eq!(s, 200);
    String::from_utf8(b.to_vec()).unwrap()
}

fn generate_bodies(m: &MockKiro) -> Vec<Value> {
    m.requests_to("/generateAssistantResponse")
        .into_iter()
        .map(|r| r.body)
        .collect()
}

#[tokio::test]
async fn a_throttled_and_an_exhausted_account_never_fail_a_request() {
    let quota = MockKiro::start(mock_cfg("QUOTA")).await.unwrap();
    let healthy = MockKiro::start(mock_cfg("HEALTHY")).await.unwrap();
    quota.fail_next(50, 429, QUOTA);
    let r = gateway(
        "THROTTLED",
        &[("quota", &quota), ("healthy", &healthy)],
        |_| {},
    )
    .await;
    r.mock.fail_next(50, 429, THROTTLED);

    // distinct conversations, so selection (not stickiness) decides: both bad accounts are met
    let n = 12;
    for i in 0..n {
        let prompt = format!("question number {i}");
        if i % 3 == 0 {
            let (s, _, b) = r
                .send(
                    r.req(
                        "POST",
                        "/v1/messages",
                        json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true,
                           "messages": [{"role": "user", "content": prompt}]})
                        .to_string(),
                    ),
                )
                .await;
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
            let events = sse_payloads(&b);
            assert_eq!(events.last().unwrap()["type"], "message_stop");
        } else {
            let (s, _, b) = r
                .chat(json!({"model": "claude-sonnet-4-5", "stream": i % 3 == 1,
                             "messages": [{"role": "user", "content": prompt}]}))
                .await;
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
            if i % 3 == 2 {
                let v: Value = serde_json::from_slice(&b).unwrap();
                let text = v["choices"][0]["message"]["content"].as_str().unwrap();
                assert!(text.contains(&prompt), "the mock echoes the prompt: {text}");
            } else {
                assert_eq!(sse_payloads(&b).last().unwrap(), "[DONE]");
            }
        }
    }

    // each bad account was met once, then left alone
    assert_eq!(r.mock.generate_calls(), 1);
    assert_eq!(quota.generate_calls(), 1);
    assert_eq!(healthy.generate_calls(), n);

    let list = accounts(&r).await;
    assert_eq!(list.len(), 3);
    let d = state_of(&list, "default");
    assert_eq!(d["state"], "cooling");
    assert!(d["retry_in_secs"].as_u64().unwrap() <= 30);
    assert!(d["last_error"].as_str().unwrap().contains("Rate exceeded"));
    assert!(d["last_error_at"].is_string());
    let q = state_of(&list, "quota");
    assert_eq!(q["state"], "parked");
    assert!(q["retry_in_secs"].as_u64().unwrap() > 3600);
    let h = state_of(&list, "healthy");
    assert_eq!(h["state"], "ok");
    assert_eq!(h["requests"], n);
    assert_eq!(h["errors"], 0);
    assert!(h["credits"].as_f64().unwrap() > 0.0);
    assert_eq!(h["auth_type"], "kiro_desktop");
    assert_eq!(h["protocol"], "q");
    assert!(h["token_expires_in_secs"].as_u64().unwrap() > 0);
    // nothing secret in the answer
    let text = serde_json::to_string(&list).unwrap();
    assert!(!text.contains("mock-refresh") && !text.contains("mock-access"));

    // every request was counted once, under the account that served it
    let m = scrape(&r).await;
    let req = "kiro_gateway_requests_total";
    assert_eq!(sample(&m, req, &[]), n as f64);
    assert_eq!(
        sample(&m, req, &[("account", "healthy"), ("status", "200")]),
        n as f64
    );
    let attempts = "kiro_gateway_upstream_attempts_total";
    assert_eq!(sample(&m, attempts, &[("account", "default")]), 1.0);
    assert_eq!(sample(&m, attempts, &[("account", "quota")]), 1.0);
    assert_eq!(sample(&m, attempts, &[("account", "healthy")]), n as f64);
    let retries = "kiro_gateway_upstream_retries_total";
    assert_eq!(sample(&m, retries, &[("cause", "failover")]), 2.0);
    assert_eq!(
        sample(&m, retries, &[("cause", "failover"), ("account", "quota")]),
        1.0
    );
    let up = "kiro_gateway_account_up";
    assert_eq!(sample(&m, up, &[("account", "healthy")]), 1.0);
    assert_eq!(sample(&m, up, &[("account", "quota")]), 0.0);
    let state = "kiro_gateway_account_state";
    assert_eq!(
        sample(&m, state, &[("account", "quota"), ("state", "parked")]),
        1.0
    );
    assert_eq!(
        sample(&m, state, &[("account", "quota"), ("state", "ok")]),
        0.0
    );
    assert!(sample(&m, "kiro_gateway_credits", &[("account", "healthy")]) > 0.0);

    // each account's requests carry its own profile ARN, whatever the body was built for
    for b in generate_bodies(&healthy) {
        assert_eq!(
            b["profileArn"],
            "arn:aws:codewhisperer:us-east-1:000000000000:profile/HEALTHY"
        );
    }
    assert_eq!(
        generate_bodies(&quota)[0]["profileArn"],
        "arn:aws:codewhisperer:us-east-1:000000000000:profile/QUOTA"
    );

    // the gateway can still serve
    let (s, _, _) = r.send(r.req("GET", "/health", "")).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn a_conversation_keeps_its_account_for_ten_turns() {
    let b = MockKiro::start(mock_cfg("B")).await.unwrap();
    let c = MockKiro::start(mock_cfg("C")).await.unwrap();
    let r = gateway("A", &[("b", &b), ("c", &c)], |cfg| {
        cfg.account_selection = kiro_gateway::accounts::Strategy::RoundRobin;
    })
    .await;
    let calls = |r: &Running| {
        [
            r.mock.generate_calls(),
            b.generate_calls(),
            c.generate_calls(),
        ]
    };

    // other conversations in between, each of which round robin would send elsewhere
    let mut messages = vec![json!({"role": "user", "content": "Let us plan a trip."})];
    let mut before = calls(&r);
    let mut home = None;
    for turn in 0..10 {
        let (s, _, body) = r
            .chat(json!({"model": "claude-sonnet-4-5", "messages": messages}))
            .await;
        assert_eq!(s, 200);
        let after = calls(&r);
        let served: Vec<usize> = (0..3).filter(|i| after[*i] > before[*i]).collect();
        assert_eq!(served.len(), 1);
        match home {
            None => home = Some(served[0]),
            Some(h) => assert_eq!(served[0], h, "turn {turn} moved to another account"),
        }
        let v: Value = serde_json::from_slice(&body).unwrap();
        messages.push(json!({"role": "assistant",
            "content": v["choices"][0]["message"]["content"].clone()}));
        messages.push(json!({"role": "user", "content": format!("And step {turn}?")}));
        let (s, _, _) = r
            .chat(json!({"model": "claude-sonnet-4-5",
                "messages": [{"role": "user", "content": format!("unrelated {turn}")}]}))
            .await;
        assert_eq!(s, 200);
        before = calls(&r);
    }
    // the unrelated one-turn conversations were spread over all three
    let total = calls(&r);
    assert!(total.iter().all(|n| *n >= 3), "{total:?}");

    // a session header is the conversation, whatever the messages say
    let before = calls(&r);
    for i in 0..4 {
        let mut req = r.req(
            "POST",
            "/v1/chat/completions",
            json!({"model": "claude-sonnet-4-5",
                   "messages": [{"role": "user", "content": format!("fresh start {i}")}]})
            .to_string(),
        );
        req.headers_mut()
            .insert("x-session-id", "session-1".parse().unwrap());
        let (s, _, _) = r.send(req).await;
        assert_eq!(s, 200);
    }
    let after = calls(&r);
    let grew: Vec<u64> = (0..3).map(|i| after[i] - before[i]).collect();
    assert!(grew.contains(&4), "{grew:?}");
}

#[tokio::test]
async fn every_account_down_is_a_429_or_503_with_retry_after() {
    let b = MockKiro::start(mock_cfg("B")).await.unwrap();
    b.fail_next(50, 429, THROTTLED);
    let r = gateway("A", &[("b", &b)], |_| {}).await;
    r.mock.fail_next(50, 429, THROTTLED);

    // OpenAI dialect: both accounts throttle, the second failover finds nobody
    let (s, h, body) = r
        .chat(json!({"model": "claude-sonnet-4-5",
                     "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let secs: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&secs), "{secs}");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "all_accounts_rate_limited");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("default: cooling") && msg.contains("b: cooling"),
        "{msg}"
    );
    // nothing further reached the mocks: both were left to cool
    let (s, h, body) = r
        .send(
            r.req(
                "POST",
                "/v1/messages",
                json!({"model": "claude-sonnet-4-5", "max_tokens": 10,
                   "messages": [{"role": "user", "content": "hi"}]})
                .to_string(),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(h.contains_key("retry-after"));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(r.mock.generate_calls() + b.generate_calls(), 2);

    // the load balancer's view
    let (s, _, body) = r.send(r.req("GET", "/health", "")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], "unavailable");

    // the admin reset needs the admin key, and brings the account back
    let reset = "/admin/accounts/b/reset";
    let (s, _, _) = r.send(r.req("POST", reset, "")).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the client key is not the admin key"
    );
    let mut req = r.req("POST", "/admin/accounts/nobody/reset", "");
    req.headers_mut()
        .insert("authorization", "Bearer admin-key".parse().unwrap());
    assert_eq!(r.send(req).await.0, StatusCode::NOT_FOUND);
    let mut req = r.req("POST", reset, "");
    req.headers_mut()
        .insert("authorization", "Bearer admin-key".parse().unwrap());
    let (s, _, body) = r.send(req).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["account"]["state"], "ok");
    assert_eq!(r.send(r.req("GET", "/health", "")).await.0, 200);
    // b is still throttling: its next request trips it again
    let (s, _, _) = r
        .chat(json!({"model": "claude-sonnet-4-5",
                     "messages": [{"role": "user", "content": "again"}]}))
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(b.generate_calls(), 2);
}

#[tokio::test]
async fn failing_accounts_cool_down_and_then_it_is_a_503() {
    let b = MockKiro::start(mock_cfg("B")).await.unwrap();
    let error = Reply::server_error(500);
    for _ in 0..20 {
        b.push_reply(error.clone());
    }
    let r = gateway("A", &[("b", &b)], |cfg| cfg.retry_max_attempts = 5).await;
    for _ in 0..20 {
        r.mock.push_reply(error.clone());
    }
    let (s, h, body) = r
        .chat(json!({"model": "claude-sonnet-4-5",
                     "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(
        s,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(h.contains_key("retry-after"));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "no_account_available");
    // two failures in a row each (ACCOUNT_FAILURE_THRESHOLD), then the breaker opened
    assert_eq!(r.mock.generate_calls(), 2);
    assert_eq!(b.generate_calls(), 2);
    let list = accounts(&r).await;
    assert!(list.iter().all(|a| a["state"] == "cooling"), "{list:?}");
}

#[tokio::test]
async fn the_account_routes_need_their_keys() {
    let b = MockKiro::start(mock_cfg("B")).await.unwrap();
    let r = gateway("A", &[("b", &b)], |cfg| cfg.admin_api_key = None).await;
    let mut req = r.req("GET", "/health/accounts", "");
    req.headers_mut().remove("authorization");
    assert_eq!(r.send(req).await.0, StatusCode::UNAUTHORIZED);
    // no ADMIN_API_KEY: the admin routes are off
    let (s, _, body) = r.send(r.req("POST", "/admin/accounts/b/reset", "")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&body).contains("ADMIN_API_KEY"));
}

#[tokio::test]
async fn a_suspended_account_and_a_refused_refresh_move_on_and_show_why() {
    let suspended = MockKiro::start(mock_cfg("S")).await.unwrap();
    suspended.fail_next(
        10,
        403,
        r#"{"message":"Your account is temporarily suspended.","reason":"TEMPORARILY_SUSPENDED"}"#,
    );
    let revoked = MockKiro::start(mock_cfg("R")).await.unwrap();
    revoked.revoke_refresh_token();
    let r = gateway("A", &[("s", &suspended), ("r", &revoked)], |cfg| {
        cfg.account_selection = kiro_gateway::accounts::Strategy::Priority;
        // s first, then r, then default
        cfg.accounts[0].priority = -2;
        cfg.accounts[1].priority = -1;
    })
    .await;
    for i in 0..3 {
        let (s, _, b) = r
            .chat(json!({"model": "claude-sonnet-4-5",
                         "messages": [{"role": "user", "content": format!("q{i}")}]}))
            .await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    }
    // the suspended account was asked once and never refreshed: a refresh cannot fix it
    assert_eq!(suspended.generate_calls(), 1);
    assert_eq!(suspended.desktop_refreshes(), 1);
    // the refused refresh was not retried in a loop either
    assert_eq!(revoked.generate_calls(), 0);
    assert_eq!(r.mock.generate_calls(), 3);
    let list = accounts(&r).await;
    assert_eq!(state_of(&list, "s")["state"], "suspended");
    assert!(state_of(&list, "s")["retry_at"].is_null());
    let rf = state_of(&list, "r");
    assert_eq!(rf["state"], "refresh-failing");
    assert!(
        rf["last_error"].as_str().unwrap().contains("refused"),
        "{rf}"
    );
    assert!(rf["retry_in_secs"].as_u64().unwrap() <= 30);
    assert_eq!(state_of(&list, "default")["state"], "ok");
}
