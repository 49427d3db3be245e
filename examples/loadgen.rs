//! Load benchmark: the release gateway binary in front of the mock Kiro on 127.0.0.1, and in the
//! same run the same load straight at the mock as the baseline.
//!
//! ```text
//! cargo build --release --bin kiro-gateway
//! cargo run --release --example loadgen -- [--gateway target/release/kiro-gateway] [--secs 3] [--pin]
//! ```
//!
//! `--pin` gives the gateway CPU 1 to itself and puts the load generator and the mock on CPU 0
//! (with `taskset`), the usual way to measure a proxy: without it all three compete for both
//! cores, and the ratios charge the gateway for the load generator's own work.
//!
//! It reports, for non-stream requests at concurrency 1, 16 and 64, requests/s and p50/p99
//! latency; for 200 and 1000 concurrent streams of 200 chunks, chunks/s and time to first
//! chunk p50/p99; the gateway's CPU seconds per 1000 non-stream requests (from
//! /proc/PID/stat) and its RSS idle and at peak (from /proc/PID/status). The mock runs in this
//! process; its own figures are the baseline rows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark tool

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use kiro_gateway::mock::{MockConfig, MockKiro, Script};
use tokio::time::Instant;

type Http = Client<HttpConnector, Full<Bytes>>;

struct Args {
    gateway: String,
    secs: f64,
    /// `--pin`: the gateway on CPU 1, this process (load generator and mock) on CPU 0
    pin: bool,
}

fn args() -> Args {
    let mut a = Args {
        gateway: "target/release/kiro-gateway".into(),
        secs: 3.0,
        pin: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--gateway" => a.gateway = it.next().expect("--gateway PATH"),
            "--secs" => a.secs = it.next().expect("--secs N").parse().expect("a number"),
            "--pin" => a.pin = true,
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[derive(Clone)]
struct Target {
    url: String,
    body: Bytes,
    auth: Option<String>,
}

impl Target {
    fn request(&self) -> http::Request<Full<Bytes>> {
        let mut b = http::Request::post(&self.url).header("content-type", "application/json");
        if let Some(a) = &self.auth {
            b = b.header("authorization", a);
        }
        b.body(Full::new(self.body.clone())).unwrap()
    }
}

/// Non-stream load: `c` workers for `secs`; returns (requests/s, sorted latencies, requests).
async fn closed_loop(http: &Http, t: &Target, c: usize, secs: f64) -> (f64, Vec<Duration>, usize) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..c)
        .map(|_| {
            let (http, t) = (http.clone(), t.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    let resp = http.request(t.request()).await.expect("request");
                    assert!(resp.status().is_success(), "status {}", resp.status());
                    resp.into_body().collect().await.expect("body");
                    lat.push(t0.elapsed());
                }
                lat
            })
        })
        .collect();
    let start = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let took = start.elapsed().as_secs_f64();
    all.sort();
    let n = all.len();
    (n as f64 / took, all, n)
}

/// `n` concurrent streams; returns (chunks/s, sorted time-to-first-chunk).
async fn streams(http: &Http, t: &Target, n: usize) -> (f64, Vec<Duration>) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (http, t) = (http.clone(), t.clone());
            tokio::spawn(async move {
                let t0 = Instant::now();
                let resp = http.request(t.request()).await.expect("request");
                assert!(resp.status().is_success());
                let mut body = resp.into_body();
                let mut first = None;
                let mut bytes = 0usize;
                while let Some(f) = body.frame().await {
                    let f = f.expect("frame");
                    if let Some(d) = f.data_ref() {
                        if first.is_none() && !d.is_empty() {
                            first = Some(t0.elapsed());
                        }
                        bytes += d.len();
                    }
                }
                (first.unwrap_or_default(), bytes)
            })
        })
        .collect();
    let mut ttfc = Vec::with_capacity(n);
    for t in tasks {
        ttfc.push(t.await.unwrap().0);
    }
    let took = start.elapsed().as_secs_f64();
    ttfc.sort();
    ((n * 200) as f64 / took, ttfc)
}

/// Moves every thread of `pid` to `cpu` (util-linux `taskset`).
fn pin(pid: u32, cpu: &str) {
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", cpu, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "taskset -a -p -c {cpu} {pid} failed (is util-linux installed?)"
    );
}

fn spawn_gateway(bin: &str, mock: &str, port: u16) -> Child {
    let bin = std::fs::canonicalize(bin).unwrap_or_else(|e| {
        panic!("{bin}: {e} (build it with cargo build --release --bin kiro-gateway)")
    });
    Command::new(bin)
        .args(["--port", &port.to_string()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("REFRESH_TOKEN", "mock-refresh-0")
        .env("KIRO_API_URL", mock)
        .env("KIRO_DESKTOP_AUTH_URL", mock)
        .env("KIRO_OIDC_URL", mock)
        .env("FAKE_REASONING", "false")
        .env("LOG_LEVEL", "warning")
        .env(
            "WORKER_THREADS",
            std::env::var("GATEWAY_WORKER_THREADS").unwrap_or_else(|_| "0".into()),
        )
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the gateway binary (build it with cargo build --release first)")
}

async fn wait_ready(http: &Http, addr: SocketAddr) {
    for _ in 0..200 {
        let req = http::Request::get(format!("http://{addr}/health"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        if let Ok(r) = http.request(req).await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway did not become ready");
}

#[tokio::main]
async fn main() {
    let a = args();
    let mock = MockKiro::start(MockConfig::default()).await.unwrap();
    let words: String = (0..20).map(|i| format!("word{i} ")).collect();
    let port = free_port();
    let gw_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut child = spawn_gateway(&a.gateway, &mock.url(), port);
    let pid = child.id();
    if a.pin {
        pin(std::process::id(), "0");
        pin(pid, "1");
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let http: Http = Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(2048)
        .build(connector);
    wait_ready(&http, gw_addr).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = status_kib(pid, "VmRSS:");

    // the mock's own token for the baseline: one refresh through its desktop flow
    let token: serde_json::Value = {
        let req = http::Request::post(format!("{}/refreshToken", mock.url()))
            .body(Full::new(Bytes::from(format!(
                r#"{{"refreshToken":"{}"}}"#,
                mock.current_refresh_token()
            ))))
            .unwrap();
        let b = http
            .request(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        serde_json::from_slice(&b).unwrap()
    };
    let bearer = format!("Bearer {}", token["accessToken"].as_str().unwrap());
    let kiro_body = Bytes::from(
        serde_json::json!({"conversationState": {"conversationId": "c", "chatTriggerType": "MANUAL",
            "currentMessage": {"userInputMessage": {"content": "hi", "modelId": "claude-sonnet-4.5", "origin": "AI_EDITOR"}}}})
        .to_string(),
    );
    let baseline = Target {
        url: format!("{}/generateAssistantResponse", mock.url()),
        body: kiro_body,
        auth: Some(bearer),
    };
    let via_gateway = |stream: bool| Target {
        url: format!("http://{gw_addr}/v1/chat/completions"),
        body: Bytes::from(
            serde_json::json!({"model": "claude-sonnet-4-5", "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
        ),
        auth: None,
    };

    println!(
        "# kiro-gateway load benchmark ({} s per non-stream level; {})",
        a.secs,
        if a.pin {
            "gateway pinned to CPU 1, load generator and mock to CPU 0"
        } else {
            "all processes share the cores"
        }
    );
    println!("\n## non-stream (answer: 20 text events)\n");
    println!(
        "| c | baseline req/s | gateway req/s | ratio | baseline p50/p99 ms | gateway p50/p99 ms |"
    );
    println!("|---|---|---|---|---|---|");
    // short answers, sent in whole frames: the mock is not the bottleneck
    mock.set_default_reply(Some(Script::text(&words, 6).max_write(1 << 16)));
    let mut gw_requests = 0usize;
    let mut gw_cpu = 0.0;
    for c in [1usize, 16, 64] {
        let (brps, blat, _) = closed_loop(&http, &baseline, c, a.secs).await;
        let cpu0 = cpu_secs(pid);
        let (grps, glat, n) = closed_loop(&http, &via_gateway(false), c, a.secs).await;
        gw_cpu += cpu_secs(pid) - cpu0;
        gw_requests += n;
        println!(
            "| {c} | {brps:.0} | {grps:.0} | {:.0} % | {} / {} | {} / {} |",
            grps / brps * 100.0,
            ms(percentile(&blat, 0.5)),
            ms(percentile(&blat, 0.99)),
            ms(percentile(&glat, 0.5)),
            ms(percentile(&glat, 0.99))
        );
    }
    println!(
        "\ngateway CPU: {:.3} CPU-seconds per 1000 non-stream requests ({gw_requests} requests)",
        gw_cpu / gw_requests as f64 * 1000.0
    );

    println!("\n## streams of 200 chunks\n");
    println!("| streams | baseline chunks/s | gateway chunks/s | ratio | baseline TTFC p50/p99 ms | gateway TTFC p50/p99 ms |");
    println!("|---|---|---|---|---|---|");
    let chunks: Vec<String> = (0..200).map(|i| format!("c{i:03} ")).collect();
    let mut s = Script::new().metadata();
    for c in &chunks {
        s = s.event(kiro_gateway::mock::MockEvent::Text(c.clone()));
    }
    mock.set_default_reply(Some(s.end().max_write(1 << 16)));
    let mut peaks = Vec::new();
    for n in [200usize, 1000] {
        let (bcps, bttfc) = streams(&http, &baseline, n).await;
        let sampler = {
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let s2 = stop.clone();
            let h = tokio::spawn(async move {
                let mut m = 0;
                while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                    m = m.max(status_kib(pid, "VmRSS:"));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                m
            });
            (stop, h)
        };
        let (gcps, gttfc) = streams(&http, &via_gateway(true), n).await;
        sampler.0.store(true, std::sync::atomic::Ordering::Relaxed);
        peaks.push((n, sampler.1.await.unwrap()));
        println!(
            "| {n} | {bcps:.0} | {gcps:.0} | {:.0} % | {} / {} | {} / {} |",
            gcps / bcps * 100.0,
            ms(percentile(&bttfc, 0.5)),
            ms(percentile(&bttfc, 0.99)),
            ms(percentile(&gttfc, 0.5)),
            ms(percentile(&gttfc, 0.99))
        );
    }
    let hwm = status_kib(pid, "VmHWM:");
    let peaks: Vec<String> = peaks
        .iter()
        .map(|(n, kib)| format!("{:.1} MB with {n} streams", *kib as f64 / 1024.0))
        .collect();
    println!(
        "\ngateway RSS: idle {:.1} MB; peak (sampled) {}; high-water mark {:.1} MB",
        idle_rss as f64 / 1024.0,
        peaks.join(", "),
        hwm as f64 / 1024.0
    );
    let _ = child.kill();
    let _ = child.wait();
}
