//! The whole layer stack (key check, body parse, capture off, model resolution, translation,
//! retry, token) over an in-process upstream that answers with real event-stream bytes: no
//! sockets, so the figures are the gateway's own cost per request, non-stream and stream; each
//! without the `MetricsLayer` and the account pool, with the metrics (`.../metrics`), with the
//! metrics and a pool of one account (`.../metrics+pool1`, the default server's stack) and of
//! three (`.../metrics+pool3`: selection, stickiness key, typed body per account), to show what
//! each costs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http_body_util::{BodyExt, Full};
use kiro_gateway::accounts::{Account, AccountPool, PoolConfig};
use kiro_gateway::api::openai::OpenAiChat;
use kiro_gateway::api::Body;
use kiro_gateway::config::Config;
use kiro_gateway::kiro::{EventStream, GenerateRequest, GenerateResponse, KiroClientConfig};
use kiro_gateway::layers::KiroAuthLayer;
use kiro_gateway::mock::{MockEvent, Script};
use kiro_gateway::server::Gateway;
use kiro_gateway::stack::gateway_stack_over;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

fn wire(chunks: usize) -> Bytes {
    let mut s = Script::new().metadata();
    for i in 0..chunks {
        s = s.event(MockEvent::Text(format!("chunk {i} of the answer, ")));
    }
    let mut all = BytesMut::new();
    for f in s.end().frames() {
        all.extend_from_slice(&f);
    }
    all.freeze()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // credentials with a valid access token: no refresh, no network
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds.json");
    std::fs::write(
        &creds,
        r#"{"accessToken":"a","refreshToken":"r","expiresAt":"2099-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    let cfg = Config {
        kiro_creds_file: Some(creds),
        fake_reasoning: false,
        proxy_api_key: "k".into(),
        ..Default::default()
    };
    let gw = Gateway::from_config(&cfg.validate().unwrap()).unwrap();
    for (name, chunks, stream) in [
        ("non_stream_20_chunks", 20usize, false),
        ("stream_200_chunks", 200, true),
    ] {
        let bytes = wire(chunks);
        let client_cfg = KiroClientConfig::new("http://unused");
        let upstream = tower::service_fn(move |_req: GenerateRequest| {
            let body = Full::new(bytes.clone());
            let events = EventStream::new(body, &client_cfg);
            async move {
                Ok::<_, kiro_gateway::kiro::Error>(GenerateResponse {
                    status: http::StatusCode::OK,
                    headers: http::HeaderMap::new(),
                    events: Box::pin(events),
                })
            }
        });
        let body = serde_json::json!({"model": "claude-sonnet-4-5", "stream": stream,
            "messages": [{"role": "user", "content": "Hello there"}]})
        .to_string();
        let mut g = c.benchmark_group("stack");
        g.throughput(Throughput::Elements(1));
        let authed = || {
            BoxCloneSyncService::new(
                KiroAuthLayer::new(gw.parts.tokens.clone()).layer(upstream.clone()),
            )
        };
        for (variant, with_metrics, pool) in [
            ("", false, 0usize),
            ("/metrics", true, 0),
            ("/metrics+pool1", true, 1),
            ("/metrics+pool3", true, 3),
        ] {
            let mut parts = gw.parts.clone();
            if !with_metrics {
                parts.metrics = None;
            }
            let svc = match pool {
                0 => gateway_stack_over::<OpenAiChat, _>(&parts, authed()),
                n => {
                    let accounts = (0..n)
                        .map(|i| Account::new(format!("a{i}"), authed()))
                        .collect();
                    let pool = AccountPool::new(accounts, PoolConfig::default()).unwrap();
                    parts.translate.pooled = pool.is_pooled();
                    gateway_stack_over::<OpenAiChat, _>(&parts, pool)
                }
            };
            let id = format!("{name}{variant}");
            g.bench_function(id, |b| {
                b.to_async(&rt).iter(|| {
                    let mut svc = svc.clone();
                    let req = http::Request::post("/v1/chat/completions")
                        .header("authorization", "Bearer k")
                        .header("content-type", "application/json")
                        .body(Body::from(body.clone()))
                        .unwrap();
                    async move {
                        let resp = svc.ready().await.unwrap().call(req).await.unwrap();
                        assert_eq!(resp.status(), 200);
                        resp.into_body().collect().await.unwrap().to_bytes().len()
                    }
                })
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
