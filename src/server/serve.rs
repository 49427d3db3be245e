//! [`serve`]: the accept loop with its connection limits, the request-head deadline and the
//! graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio_util::sync::CancellationToken;

use super::router::normalize_path;

/// Connection limits and shutdown behaviour of [`serve`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How long running requests may go on after shutdown starts; then open streams are closed
    /// with an error event (`SHUTDOWN_GRACE_SECS`).
    pub grace: Duration,
    /// A connection must complete a request head within this time (`HEADER_READ_TIMEOUT`):
    /// counted from its accept for the first request, whatever it sends meanwhile (nothing,
    /// part of the HTTP/2 preface, half a request line), and from the end of the previous
    /// answer on a kept-alive HTTP/1 connection. Then it is closed.
    pub header_read_timeout: Duration,
    /// Bound on the request head (HTTP/1 read buffer, HTTP/2 header list). For HTTP/1 it also
    /// caps what hyper queues for a slow reader before it stops pulling the response body, so
    /// it is kept small (16 KiB, a few times what any known client sends as headers).
    pub max_header_bytes: usize,
    /// Open client connections at most (`MAX_CONNECTIONS`); past it a new connection is closed
    /// as soon as it is accepted. 0: [`default_max_connections`].
    pub max_connections: usize,
    /// Where the connection figures are recorded (open, refused, closed without a request).
    pub metrics: Option<crate::layers::Metrics>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            grace: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_connections: 0,
            metrics: None,
        }
    }
}

/// The connection cap when `MAX_CONNECTIONS` is 0: half the process's soft limit on open files
/// (the other half is left for upstream connections, credential files and the listener), at
/// least 64; 4096 where the limit cannot be read (it is read from `/proc/self/limits`).
pub fn default_max_connections() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| open_files_limit(&t))
        .map_or(4096, |n| (n / 2).max(64))
}

/// The soft "Max open files" of a `/proc/<pid>/limits` text (`None`: unlimited or absent).
fn open_files_limit(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Set once hyper has parsed a request head on the connection (it calls the service then).
#[derive(Default)]
struct FirstHead {
    seen: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

/// The connection's service, which tells [`FirstHead`] when a request head is complete.
#[derive(Clone)]
struct MarkHead<S> {
    inner: S,
    first: Arc<FirstHead>,
}

impl<S, R> hyper::service::Service<R> for MarkHead<S>
where
    S: hyper::service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, req: R) -> Self::Future {
        if !self
            .first
            .seen
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            self.first.notify.notify_one();
        }
        self.inner.call(req)
    }
}

/// Serve `router` on `listener` until `shutdown` fires. Then the listener closes, running
/// requests get `opts.grace` to finish, and after that `close_streams` is cancelled so every
/// open stream ends with an error event (never a clean-looking end); the call returns once
/// all connections are done.
///
/// Each connection is one task holding one of `opts.max_connections` slots; when none is free
/// a new connection is closed at once. A connection that has not completed a request head
/// within `opts.header_read_timeout` of its accept is closed, whatever it sent: hyper's own
/// header timeout only starts once the bytes that tell HTTP/1 from HTTP/2 are in, and HTTP/2
/// has none. Later requests on a kept-alive HTTP/1 connection are under hyper's header timeout
/// (which runs from the end of the previous answer); an HTTP/2 connection whose peer stops
/// answering pings is closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
    close_streams: CancellationToken,
    opts: ServeOptions,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower_layer::Layer;
    let app =
        tower::util::MapRequestLayer::new(normalize_path::<hyper::body::Incoming>).layer(router);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(opts.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(60)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_header_list_size(u32::try_from(opts.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let max = match opts.max_connections {
        0 => default_max_connections(),
        n => n,
    };
    // whole permits are waited for at shutdown, in one `acquire_many` (a u32)
    let max = max.min(u32::MAX as usize) as u32;
    let slots = Arc::new(tokio::sync::Semaphore::new(max as usize));
    let metrics = opts.metrics.clone();
    let set_open = {
        let (slots, metrics) = (slots.clone(), metrics.clone());
        move || {
            if let Some(m) = &metrics {
                m.set_open_connections(max as usize - slots.available_permits());
            }
        }
    };
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // out of file descriptors and the like: back off instead of spinning
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    // over MAX_CONNECTIONS: closed at once, so the descriptors left serve the
                    // connections already open (and the upstream ones)
                    drop(stream);
                    if let Some(m) = &metrics {
                        m.connection_refused();
                    }
                    tracing::debug!(max, "connection refused: MAX_CONNECTIONS reached");
                    continue;
                };
                set_open();
                let _ = stream.set_nodelay(true);
                let (builder, app, shutdown) = (builder.clone(), app.clone(), shutdown.clone());
                let (metrics, set_open) = (metrics.clone(), set_open.clone());
                let head_timeout = opts.header_read_timeout;
                // each connection task holds a slot, which shutdown waits for
                tokio::spawn(async move {
                    let first = Arc::new(FirstHead::default());
                    let svc = MarkHead {
                        inner: hyper_util::service::TowerToHyperService::new(app),
                        first: first.clone(),
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    let head_deadline = tokio::time::sleep(head_timeout);
                    tokio::pin!(head_deadline);
                    let mut waiting_for_head = true;
                    let mut draining = false;
                    loop {
                        tokio::select! {
                            done = conn.as_mut() => {
                                if let Err(e) = done {
                                    tracing::debug!(error = %e, "connection ended with an error");
                                }
                                break;
                            }
                            _ = first.notify.notified(), if waiting_for_head => {
                                waiting_for_head = false;
                            }
                            _ = &mut head_deadline, if waiting_for_head => {
                                if first.seen.load(std::sync::atomic::Ordering::Acquire) {
                                    waiting_for_head = false;
                                    continue;
                                }
                                // no request yet, so nothing to finish: dropping the
                                // connection closes the socket
                                if let Some(m) = &metrics {
                                    m.connection_head_timeout();
                                }
                                tracing::debug!("connection closed: no complete request head within HEADER_READ_TIMEOUT");
                                break;
                            }
                            _ = shutdown.cancelled(), if !draining => {
                                draining = true;
                                conn.as_mut().graceful_shutdown();
                            }
                        }
                    }
                    drop(slot);
                    set_open();
                });
            }
        }
    }
    drop(listener);
    // every connection task gives its slot back when it ends
    let all_done = slots.acquire_many(max);
    tokio::pin!(all_done);
    tokio::select! {
        _ = &mut all_done => {}
        _ = tokio::time::sleep(opts.grace) => {
            tracing::warn!("grace period over: closing the remaining streams");
            close_streams.cancel();
            if tokio::time::timeout(Duration::from_secs(5), &mut all_done).await.is_err() {
                tracing::warn!("some connections did not close in time");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_soft_open_files_limit() {
        let limits =
            "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max open files            1024                 524288               files     \n";
        assert_eq!(open_files_limit(limits), Some(1024));
        assert_eq!(
            open_files_limit(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
        assert!(default_max_connections() >= 64);
    }
}
