//! Load: 500 concurrent streaming requests through the gateway to the mock, every answer
//! checked for exact content; the process's peak RSS (gateway, mock and clients together) is
//! printed. Ignored by default; run it with
//! `cargo test --release --test load -- --ignored --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::start_with;
use http_body_util::BodyExt;
use kiro_gateway::mock::{MockConfig, Script};
use serde_json::{json, Value};

fn vm_hwm_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: run with --ignored"]
async fn five_hundred_concurrent_streams_complete_exactly() {
    const STREAMS: usize = 500;
    let r = start_with(MockConfig::default(), |c| c.fake_reasoning = false).await;
    let text: String = (0..200).map(|i| format!("chunk {i:03} é; ")).collect();
    r.mock.set_default_reply(Some(Script::text(&text, 13)));
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..STREAMS)
        .map(|i| {
            let http = r.http.clone();
            let req = r.req(
                "POST",
                if i % 2 == 0 {
                    "/v1/chat/completions"
                } else {
                    "/v1/messages"
                },
                json!({"model": "claude-sonnet-4-5", "stream": true, "max_tokens": 10,
                       "messages": [{"role": "user", "content": format!("request {i}")}]})
                .to_string(),
            );
            tokio::spawn(async move {
                let resp = http.request(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                let mut out = String::new();
                for e in String::from_utf8_lossy(&body).split("\n\n") {
                    let Some(d) = e.lines().find_map(|l| l.strip_prefix("data: ")) else {
                        continue;
                    };
                    if d == "[DONE]" {
                        continue;
                    }
                    let v: Value = serde_json::from_str(d).unwrap();
                    if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                        out.push_str(t);
                    }
                    if let Some(t) = v["delta"]["text"].as_str() {
                        out.push_str(t);
                    }
                }
                out
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), text);
    }
    let took = start.elapsed();
    println!(
        "{STREAMS} concurrent streams of 200 chunks: all exact, {:.2} s, peak RSS of the test process (gateway + mock + clients) {} KiB",
        took.as_secs_f64(),
        vm_hwm_kib().unwrap_or(0)
    );
    assert_eq!(r.mock.generate_calls() as usize, STREAMS);
}
