//! Shutdown and connection hygiene: graceful shutdown with a grace period, SIGTERM on the real
//! binary, slow-loris clients.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use kiro_gateway::config::Config;
use kiro_gateway::mock::{MockConfig, MockKiro, Reply, Script};
use kiro_gateway::server::{Gateway, ServeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct Server {
    addr: std::net::SocketAddr,
    mock: MockKiro,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A gateway on a fresh mock: no client key, no fake reasoning.
async fn gateway() -> (MockKiro, Gateway) {
    let mock = MockKiro::start(MockConfig::default()).await.unwrap();
    let mut cfg = Config {
        fake_reasoning: false,
        ..Default::default()
    };
    cfg.use_mock(&mock);
    let gw = Gateway::from_config(&cfg.validate().unwrap()).unwrap();
    (mock, gw)
}

async fn server(opts: ServeOptions) -> Server {
    let (mock, gw) = gateway().await;
    let served = common::serve_on_loopback(&gw, opts).await;
    Server {
        addr: served.addr,
        mock,
        shutdown: served.shutdown,
        task: served.task,
    }
}

fn stream_request(addr: std::net::SocketAddr) -> http::Request<Full<bytes::Bytes>> {
    http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(
            r#"{"model":"claude-sonnet-4-5","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap()
}

#[tokio::test]
async fn shutdown_lets_short_streams_finish_and_cuts_long_ones_with_an_error() {
    let s = server(ServeOptions {
        grace: Duration::from_millis(400),
        ..Default::default()
    })
    .await;
    // one stream that ends within the grace period, one that would take ~10 s
    s.mock.push_reply(Reply::Stream(
        Script::text("short answer", 4).write_pause(Duration::from_millis(5)),
    ));
    s.mock.push_reply(Reply::Stream(
        Script::text(&"long ".repeat(2000), 5).write_pause(Duration::from_millis(5)),
    ));
    let c = common::http_client();
    let short = c.request(stream_request(s.addr)).await.unwrap();
    let long = c.request(stream_request(s.addr)).await.unwrap();
    s.shutdown.cancel();
    let short_body = short.into_body().collect().await.unwrap().to_bytes();
    let long_body = long.into_body().collect().await.unwrap().to_bytes();
    let short_text = String::from_utf8_lossy(&short_body);
    let long_text = String::from_utf8_lossy(&long_body);
    assert!(short_text.ends_with("data: [DONE]\n\n"), "{short_text}");
    assert!(
        long_text.contains("shutting down"),
        "{}",
        &long_text[long_text.len().saturating_sub(300)..]
    );
    assert!(!long_text.contains("[DONE]"));
    // the server returned, and no longer accepts connections
    let res = tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .unwrap()
        .unwrap();
    assert!(res.is_ok());
    assert!(tokio::net::TcpStream::connect(s.addr).await.is_err());
}

#[tokio::test]
async fn slow_loris_clients_are_disconnected() {
    let s = server(ServeOptions {
        header_read_timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    conn.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // ...and never finishes the headers
    let mut buf = Vec::new();
    let t0 = tokio::time::Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    assert!(t0.elapsed() < Duration::from_secs(3));
    s.shutdown.cancel();
}

/// Read until the server closes the connection; `None` if it is still open after `within`.
async fn closed_within(conn: &mut tokio::net::TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    match tokio::time::timeout(within, conn.read_to_end(&mut buf)).await {
        Ok(_) => Some(buf),
        Err(_) => None,
    }
}

#[tokio::test]
async fn silent_and_half_preface_connections_are_closed_after_the_header_timeout() {
    let s = server(ServeOptions {
        header_read_timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    // nothing at all, one byte, the first line of the HTTP/2 preface, the whole preface (an
    // HTTP/2 connection that never sends a request)
    let sends: [&[u8]; 4] = [
        b"",
        b"G",
        b"PRI * HTTP/2.0\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ];
    let mut conns = Vec::new();
    for bytes in sends {
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        c.write_all(bytes).await.unwrap();
        conns.push(c);
    }
    let t0 = tokio::time::Instant::now();
    for (i, c) in conns.iter_mut().enumerate() {
        let got = closed_within(c, Duration::from_secs(5)).await;
        assert!(
            got.is_some(),
            "connection {i} ({:?}) was kept open",
            sends[i]
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(3));
    // the gateway still answers
    let r = common::http_client()
        .request(
            http::Request::get(format!("http://{}/health", s.addr))
                .body(Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.shutdown.cancel();
}

#[tokio::test]
async fn kept_alive_connections_serve_the_next_request_and_close_when_idle() {
    let s = server(ServeOptions {
        header_read_timeout: Duration::from_millis(800),
        ..Default::default()
    })
    .await;
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let get = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n";
    for _ in 0..2 {
        c.write_all(get).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        // an idle pause between requests on the kept-alive connection: the behaviour under
        // test, not a wait for a writer
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // then idle: closed once the header timeout has run from the end of the last answer
    let t0 = tokio::time::Instant::now();
    assert!(closed_within(&mut c, Duration::from_secs(5))
        .await
        .is_some());
    assert!(t0.elapsed() >= Duration::from_millis(500));
    s.shutdown.cancel();
}

#[tokio::test]
async fn a_request_running_past_the_header_timeout_is_not_cut() {
    let s = server(ServeOptions {
        header_read_timeout: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    // about a second of streaming, five times the header timeout
    s.mock.push_reply(Reply::Stream(
        Script::text(&"word ".repeat(40), 40).write_pause(Duration::from_millis(25)),
    ));
    let r = common::http_client()
        .request(stream_request(s.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    s.shutdown.cancel();
}

#[tokio::test]
async fn connections_past_max_connections_are_closed_at_once_and_counted() {
    let (_mock, gw) = gateway().await;
    let served = common::serve_on_loopback(
        &gw,
        ServeOptions {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 2,
            metrics: Some(gw.metrics.clone()),
            ..Default::default()
        },
    )
    .await;
    let (addr, shutdown) = (served.addr, served.shutdown);
    // two silent connections take both slots
    let a = tokio::net::TcpStream::connect(addr).await.unwrap();
    let b = tokio::net::TcpStream::connect(addr).await.unwrap();
    // the server has accepted both (its gauge is set as it takes a slot)
    common::eventually(
        "the gateway to accept the two silent connections",
        Duration::from_secs(2),
        || {
            gw.metrics
                .render()
                .contains("kiro_gateway_connections_open 2\n")
        },
    )
    .await;
    // the third is closed at once, long before the 10 s header timeout
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let got = closed_within(&mut third, Duration::from_secs(2)).await;
    assert_eq!(got.as_deref(), Some(&b""[..]));
    let text = gw.metrics.render();
    assert!(
        text.contains("kiro_gateway_connections_refused_total 1\n"),
        "{text}"
    );
    assert!(text.contains("kiro_gateway_connections_open 2\n"), "{text}");
    // once they go, the slots are free again
    drop((a, b));
    common::eventually(
        "the gateway to close the two dropped connections",
        Duration::from_secs(2),
        || {
            gw.metrics
                .render()
                .contains("kiro_gateway_connections_open 0\n")
        },
    )
    .await;
    let r = common::http_client()
        .request(
            http::Request::get(format!("http://{addr}/health"))
                .body(Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    shutdown.cancel();
}

#[test]
fn sigterm_stops_the_binary_with_exit_code_zero() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::binary_in(dir.path())
        .args(["--demo", "--port", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    // wait until it listens (it prints the curl line then)
    let mut ready = false;
    for line in lines.by_ref() {
        if line.unwrap().trim_start().starts_with("curl ") {
            ready = true;
            break;
        }
    }
    assert!(ready);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // up to 10 s
    for attempt in 0.. {
        if let Some(code) = child.try_wait().unwrap() {
            assert!(code.success(), "exit status {code:?}");
            break;
        }
        assert!(attempt < 500, "did not exit after SIGTERM");
        // polls the child's exit (a blocking test, no runtime for `common::eventually`)
        std::thread::sleep(Duration::from_millis(20));
    }
}
