//! `MetricsLayer`: counts every request of a route and times it, in Prometheus terms.
//!
//! The layer sits outermost in [`gateway_stack`](super::gateway_stack). For each request it puts
//! a [`RequestRecord`] into the request extensions, which the layers below fill in as they
//! learn things: the client key's name ([`ApiKeyLayer`](super::ApiKeyLayer)), the model and the
//! final usage ([`TranslateLayer`](super::TranslateLayer) hands the record's usage slot to the
//! dialect's encoder or folder), the upstream attempts and the retries by cause
//! ([`RetryLayer`](super::RetryLayer), [`KiroAuthLayer`](super::KiroAuthLayer)), and the account
//! that served it (`default` until an account pool sets it, through
//! [`RequestRecord::set_account`]).
//!
//! The response body is wrapped: the first frame gives the time to first byte; the end of the
//! body (or its drop, when the client goes away) records the request, its duration, its tokens
//! and credits, exactly once. Streams are counted in flight meanwhile.
//!
//! Recording goes to a [`Metrics`] registry owned by the gateway (not the process-global
//! recorder of the `metrics` facade), so two gateways in one process, or two tests, never
//! count into each other. [`Metrics::render`] gives the Prometheus text.
//!
//! ```
//! use kiro_gateway::layers::metrics::{Metrics, MetricsLayer};
//! use kiro_gateway::api::{Body, Dialect};
//! use tower::{Layer, ServiceExt};
//!
//! # tokio_test_block_on(async {
//! let metrics = Metrics::new();
//! let layer = MetricsLayer::new(metrics.clone(), "/v1/chat/completions", Dialect::OpenAi);
//! let svc = layer.layer(tower::service_fn(|_req: http::Request<Body>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Body::from("{}")))
//! }));
//! let resp = svc.oneshot(http::Request::post("/v1/chat/completions").body(Body::empty()).unwrap()).await.unwrap();
//! let _ = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap();
//! assert!(metrics.render().contains(r#"kiro_gateway_requests_total{route="/v1/chat/completions",dialect="openai""#));
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use pin_project::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::api::{Body, Dialect};

pub use crate::context::record::{RequestRecord, RetryCause, DEFAULT_ACCOUNT, NO_CLIENT};

const META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Metric names, all prefixed `kiro_gateway_`.
pub mod names {
    /// Counter: requests answered, by route, dialect, model, status, account and client.
    pub const REQUESTS: &str = "kiro_gateway_requests_total";
    /// Gauge: streamed answers open now.
    pub const STREAMS_IN_FLIGHT: &str = "kiro_gateway_streams_in_flight";
    /// Histogram: seconds from the request to the first byte of the answer.
    pub const TTFB: &str = "kiro_gateway_time_to_first_byte_seconds";
    /// Histogram: seconds from the request to the end of the answer.
    pub const DURATION: &str = "kiro_gateway_request_duration_seconds";
    /// Counter: calls made to the Kiro service, by account.
    pub const UPSTREAM_ATTEMPTS: &str = "kiro_gateway_upstream_attempts_total";
    /// Counter: Kiro calls retried, by cause and account.
    pub const UPSTREAM_RETRIES: &str = "kiro_gateway_upstream_retries_total";
    /// Counter: access-token refreshes attempted, by account.
    pub const TOKEN_REFRESHES: &str = "kiro_gateway_token_refreshes_total";
    /// Counter: access-token refreshes that failed, by account.
    pub const TOKEN_REFRESH_FAILURES: &str = "kiro_gateway_token_refresh_failures_total";
    /// Counter: input tokens of finished answers, by account and model.
    pub const INPUT_TOKENS: &str = "kiro_gateway_input_tokens_total";
    /// Counter: output tokens of finished answers, by account and model.
    pub const OUTPUT_TOKENS: &str = "kiro_gateway_output_tokens_total";
    /// Gauge: Kiro credits charged, by account and model (a running sum).
    pub const CREDITS: &str = "kiro_gateway_credits";
    /// Gauge: 1 when the account can take a request now.
    pub const ACCOUNT_UP: &str = "kiro_gateway_account_up";
    /// Gauge: 1 on the series of the account's current state.
    pub const ACCOUNT_STATE: &str = "kiro_gateway_account_state";
    /// Gauge: client connections open now.
    pub const CONNECTIONS_OPEN: &str = "kiro_gateway_connections_open";
    /// Counter: connections closed at once, `MAX_CONNECTIONS` being open.
    pub const CONNECTIONS_REFUSED: &str = "kiro_gateway_connections_refused_total";
    /// Counter: connections closed for not sending a request head in time.
    pub const CONNECTIONS_HEAD_TIMEOUT: &str = "kiro_gateway_connections_head_timeout_total";
}

/// One account as its gauges show it (see [`Metrics::set_accounts`]); the account pool's
/// snapshots convert into it.
#[derive(Debug, Clone, Copy)]
pub struct AccountGauge<'a> {
    /// The account's name (the `account` label).
    pub name: &'a str,
    /// `ok`, `cooling`, `parked`, `suspended` or `refresh-failing`.
    pub state: &'a str,
    /// Whether it can take a request now.
    pub available: bool,
    /// Token refreshes done for it since the start.
    pub token_refreshes: u64,
    /// Token refreshes that failed.
    pub token_refresh_failures: u64,
}

/// The gateway's metrics registry: cheap to clone, shared by every route's layer.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<MetricsInner>,
}

struct MetricsInner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// The last [`RECENT_FAILURES`] answers with an error status, oldest first.
    failures: std::sync::Mutex<std::collections::VecDeque<FailureRecord>>,
}

/// How many failed requests [`Metrics::recent_failures`] keeps.
pub const RECENT_FAILURES: usize = 20;

/// A request answered with an error status, for the dashboard: where, who, and the error's
/// message (the gateway's own wording, never a prompt, a token or a key).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailureRecord {
    /// When, in RFC 3339.
    pub at: String,
    /// The route's label (`/v1/messages`, …).
    pub route: &'static str,
    /// The Kiro model id (empty when the request failed before its model was resolved).
    pub model: String,
    /// Empty when the request never reached an account of a pool (refused before, say).
    pub account: String,
    /// The client key's name (`-` without a key check).
    pub client: String,
    /// The HTTP status answered (or reported mid-stream).
    pub status: u16,
    /// The error's message, at most 500 bytes.
    pub message: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Histogram buckets of the durations, in seconds (first tokens take about a second; long
/// streams minutes).
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

impl Metrics {
    /// An empty registry, every metric described.
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new();
        // only fails for an empty bucket list
        let builder = match builder.set_buckets(DURATION_BUCKETS) {
            Ok(b) => b,
            Err(_) => PrometheusBuilder::new(),
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let m = Metrics {
            inner: Arc::new(MetricsInner {
                recorder,
                handle,
                failures: Default::default(),
            }),
        };
        m.describe();
        m
    }

    fn describe(&self) {
        let r = &self.inner.recorder;
        let c = |name: &'static str, unit: Option<Unit>, help: &'static str| {
            r.describe_counter(name.into(), unit, help.into())
        };
        c(
            names::REQUESTS,
            None,
            "Requests answered, by route, dialect, model, status, account and client key name",
        );
        c(
            names::UPSTREAM_ATTEMPTS,
            None,
            "Calls made to the Kiro service, by account",
        );
        c(
            names::UPSTREAM_RETRIES,
            None,
            "Kiro calls retried, by cause (throttle, 5xx, connect, invalid_token, first_token_timeout) and account",
        );
        c(
            names::TOKEN_REFRESHES,
            None,
            "Access-token refreshes attempted, by account",
        );
        c(
            names::TOKEN_REFRESH_FAILURES,
            None,
            "Access-token refreshes that failed, by account",
        );
        c(
            names::INPUT_TOKENS,
            None,
            "Input (prompt) tokens of finished answers, by account and model",
        );
        c(
            names::OUTPUT_TOKENS,
            None,
            "Output (completion) tokens of finished answers, by account and model",
        );
        c(
            names::CONNECTIONS_REFUSED,
            None,
            "Client connections closed as soon as they were accepted, MAX_CONNECTIONS being open",
        );
        c(
            names::CONNECTIONS_HEAD_TIMEOUT,
            None,
            "Client connections closed for not completing a request head within HEADER_READ_TIMEOUT of their accept",
        );
        r.describe_gauge(
            names::CONNECTIONS_OPEN.into(),
            None,
            "Client connections open now".into(),
        );
        r.describe_gauge(
            names::STREAMS_IN_FLIGHT.into(),
            None,
            "Streamed answers open now".into(),
        );
        r.describe_gauge(
            names::CREDITS.into(),
            None,
            "Kiro credits charged for finished answers, by account and model (a running sum)"
                .into(),
        );
        r.describe_gauge(
            names::ACCOUNT_UP.into(),
            None,
            "1 when the account can take a request now (ok, or its wait is over), else 0".into(),
        );
        r.describe_gauge(
            names::ACCOUNT_STATE.into(),
            None,
            "The account's state: 1 on the series of its current state (ok, cooling, parked, suspended, refresh-failing), 0 on the others".into(),
        );
        r.describe_histogram(
            names::TTFB.into(),
            Some(Unit::Seconds),
            "Time from the request to the first byte of the answer, by route and dialect".into(),
        );
        r.describe_histogram(
            names::DURATION.into(),
            Some(Unit::Seconds),
            "Time from the request to the end of the answer, by route and dialect".into(),
        );
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.inner
            .recorder
            .register_counter(&Key::from_parts(name, labels), &META)
    }

    fn gauge(&self, name: &'static str, labels: Vec<Label>) -> Gauge {
        self.inner
            .recorder
            .register_gauge(&Key::from_parts(name, labels), &META)
    }

    fn histogram(&self, name: &'static str, labels: Vec<Label>) -> Histogram {
        self.inner
            .recorder
            .register_histogram(&Key::from_parts(name, labels), &META)
    }

    /// Set the refresh counters of `account` to a token manager's running totals (called
    /// before each scrape, so the token code needs no handle on the registry).
    pub fn set_refreshes(&self, account: &str, refreshes: u64, failures: u64) {
        let labels = || vec![Label::new("account", account.to_owned())];
        self.counter(names::TOKEN_REFRESHES, labels())
            .absolute(refreshes);
        self.counter(names::TOKEN_REFRESH_FAILURES, labels())
            .absolute(failures);
    }

    /// Set each account's refresh counters and availability from a pool snapshot (called
    /// before each scrape).
    pub fn set_accounts<'a>(&self, accounts: impl IntoIterator<Item = AccountGauge<'a>>) {
        for a in accounts {
            self.set_refreshes(a.name, a.token_refreshes, a.token_refresh_failures);
            let up = if a.available { 1.0 } else { 0.0 };
            self.gauge(
                names::ACCOUNT_UP,
                vec![Label::new("account", a.name.to_owned())],
            )
            .set(up);
            // the usual shape of an enumeration: one series per state, 1 for the current one
            for state in ["ok", "cooling", "parked", "suspended", "refresh-failing"] {
                let labels = vec![
                    Label::new("account", a.name.to_owned()),
                    Label::new("state", state),
                ];
                let v = if state == a.state { 1.0 } else { 0.0 };
                self.gauge(names::ACCOUNT_STATE, labels).set(v);
            }
        }
    }

    /// A client connection closed at once: `MAX_CONNECTIONS` were open.
    pub fn connection_refused(&self) {
        self.counter(names::CONNECTIONS_REFUSED, Vec::new())
            .increment(1);
    }

    /// A client connection closed for not completing a request head in time.
    pub fn connection_head_timeout(&self) {
        self.counter(names::CONNECTIONS_HEAD_TIMEOUT, Vec::new())
            .increment(1);
    }

    /// Client connections open now.
    pub fn set_open_connections(&self, n: usize) {
        self.gauge(names::CONNECTIONS_OPEN, Vec::new())
            .set(n as f64);
    }

    /// The last failed requests, newest first.
    pub fn recent_failures(&self) -> Vec<FailureRecord> {
        let f = crate::lock(&self.inner.failures);
        f.iter().rev().cloned().collect()
    }

    /// Keep a failed request (only answers with an error status come here: nothing is kept
    /// for a successful one).
    fn note_failure(&self, route: &RouteMetrics, rec: &RequestRecord, status: u16, message: &str) {
        let mut message = message.to_owned();
        if message.len() > 500 {
            let mut cut = 500;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let record = FailureRecord {
            at: crate::auth::source::format_expiry(std::time::SystemTime::now()),
            route: route.route,
            model: rec.model().to_owned(),
            account: rec
                .account_if_any()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            client: rec.client().to_owned(),
            status,
            message,
        };
        let mut f = crate::lock(&self.inner.failures);
        if f.len() >= RECENT_FAILURES {
            f.pop_front();
        }
        f.push_back(record);
    }

    /// Everything recorded, in the Prometheus text format.
    pub fn render(&self) -> String {
        self.inner.handle.render()
    }

    /// Fold recorded histogram samples into their buckets (rendering does it too); run
    /// periodically when nothing scrapes, so the samples cannot pile up.
    pub fn run_upkeep(&self) {
        self.inner.handle.run_upkeep();
    }

    /// [`Metrics::run_upkeep`] every `period` until `cancel` fires.
    pub async fn upkeep_every(
        self,
        period: std::time::Duration,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(period) => self.run_upkeep(),
            }
        }
    }

    /// Record what a finished request's record says.
    fn finish(&self, route: &RouteMetrics, rec: &RequestRecord, status: u16) {
        let account = rec.account();
        let account = &*account;
        let labels = vec![
            Label::new("route", route.route),
            Label::new("dialect", route.dialect),
            Label::new("model", rec.model().to_owned()),
            Label::new("status", status_str(status)),
            Label::new("account", account.to_owned()),
            Label::new("client", rec.client().to_owned()),
        ];
        self.counter(names::REQUESTS, labels).increment(1);
        let tallies = rec.per_account();
        for t in &tallies {
            if t.attempts > 0 {
                self.counter(
                    names::UPSTREAM_ATTEMPTS,
                    vec![Label::new("account", t.name().to_owned())],
                )
                .increment(u64::from(t.attempts));
            }
            for cause in RetryCause::ALL {
                let n = t.retries[cause.index()];
                if n > 0 {
                    self.counter(
                        names::UPSTREAM_RETRIES,
                        vec![
                            Label::new("cause", cause.as_str()),
                            Label::new("account", t.name().to_owned()),
                        ],
                    )
                    .increment(u64::from(n));
                }
            }
        }
        if let Some(u) = rec.usage().take() {
            let labels = || {
                vec![
                    Label::new("account", account.to_owned()),
                    Label::new("model", rec.model().to_owned()),
                ]
            };
            self.counter(names::INPUT_TOKENS, labels())
                .increment(u.prompt_tokens);
            self.counter(names::OUTPUT_TOKENS, labels())
                .increment(u.completion_tokens);
            if let Some(c) = u.credits {
                self.gauge(names::CREDITS, labels()).increment(c);
            }
        }
    }
}

/// A status code as a label value without formatting for the common ones.
fn status_str(status: u16) -> metrics::SharedString {
    let s: &'static str = match status {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        413 => "413",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        other => return other.to_string().into(),
    };
    s.into()
}

/// The handles a route records into on every request (registered once).
struct RouteMetrics {
    route: &'static str,
    dialect: &'static str,
    ttfb: Histogram,
    duration: Histogram,
    streams: Gauge,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("route", &self.route)
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Metrics,
    route: Arc<RouteMetrics>,
}

impl MetricsLayer {
    /// Count the requests of `route` (a fixed label, e.g. `/v1/messages`) in `dialect`.
    pub fn new(metrics: Metrics, route: &'static str, dialect: Dialect) -> Self {
        let dialect = dialect.as_str();
        let labels = || vec![Label::new("route", route), Label::new("dialect", dialect)];
        let route = RouteMetrics {
            route,
            dialect,
            ttfb: metrics.histogram(names::TTFB, labels()),
            duration: metrics.histogram(names::DURATION, labels()),
            streams: metrics.gauge(names::STREAMS_IN_FLIGHT, Vec::new()),
        };
        MetricsLayer {
            metrics,
            route: Arc::new(route),
        }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
            route: self.route.clone(),
        }
    }
}

/// The service of [`MetricsLayer`]: gives each request a [`RequestRecord`], calls `S`, and
/// records the request when its answer's body ends.
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Metrics,
    route: Arc<RouteMetrics>,
}

impl<S> MetricsService<S> {
    inner_service_accessors!();
}

impl<S, B> Service<Request<B>> for MetricsService<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let record = RequestRecord::default();
        req.extensions_mut().insert(record.clone());
        ResponseFuture {
            inner: self.inner.call(req),
            pending: Some(Pending {
                metrics: self.metrics.clone(),
                route: self.route.clone(),
                record,
                start: tokio::time::Instant::now(),
            }),
        }
    }
}

#[derive(Debug)]
struct Pending {
    metrics: Metrics,
    route: Arc<RouteMetrics>,
    record: RequestRecord,
    start: tokio::time::Instant,
}

/// Resolves to the inner response with its body wrapped in a [`MetricsBody`].
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F> {
    #[pin]
    inner: F,
    pending: Option<Pending>,
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(r)) => r,
        };
        let Some(p) = this.pending.take() else {
            return Poll::Ready(Ok(resp));
        };
        let stream = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if stream {
            p.route.streams.increment(1.0);
        }
        let (parts, body) = resp.into_parts();
        if parts.status.as_u16() >= 400 {
            let message = parts
                .extensions
                .get::<crate::error::GatewayError>()
                .map(|e| e.message().to_owned())
                .unwrap_or_else(|| {
                    parts
                        .status
                        .canonical_reason()
                        .unwrap_or("error")
                        .to_owned()
                });
            p.metrics
                .note_failure(&p.route, &p.record, parts.status.as_u16(), &message);
        }
        let end = body_end(&body);
        let mut body = MetricsBody {
            inner: body,
            state: Some(BodyState {
                p,
                status: parts.status.as_u16(),
                stream,
                first_byte: false,
            }),
        };
        if end {
            body.finish();
        }
        Poll::Ready(Ok(Response::from_parts(parts, Body::new(body))))
    }
}

fn body_end<B: http_body::Body>(b: &B) -> bool {
    b.is_end_stream()
}

#[derive(Debug)]
struct BodyState {
    p: Pending,
    status: u16,
    stream: bool,
    first_byte: bool,
}

impl BodyState {
    fn first_byte(&mut self) {
        if !self.first_byte {
            self.first_byte = true;
            let elapsed = self.p.start.elapsed().as_secs_f64();
            self.p.route.ttfb.record(elapsed);
        }
    }

    fn finish(mut self) {
        self.first_byte();
        let p = &self.p;
        p.route.duration.record(p.start.elapsed().as_secs_f64());
        if self.stream {
            p.route.streams.decrement(1.0);
        }
        p.metrics.finish(&p.route, &p.record, self.status);
        if let Some((status, message)) = p.record.stream_failure() {
            p.metrics
                .note_failure(&p.route, &p.record, *status, message);
        }
    }
}

/// A response body that records the request when it ends or is dropped (once).
#[pin_project(PinnedDrop)]
#[derive(Debug)]
pub struct MetricsBody<B> {
    #[pin]
    inner: B,
    state: Option<BodyState>,
}

impl<B> MetricsBody<B> {
    fn finish(&mut self) {
        if let Some(s) = self.state.take() {
            s.finish();
        }
    }
}

#[pin_project::pinned_drop]
impl<B> PinnedDrop for MetricsBody<B> {
    fn drop(self: Pin<&mut Self>) {
        if let Some(s) = self.project().state.take() {
            s.finish();
        }
    }
}

impl<B> http_body::Body for MetricsBody<B>
where
    B: http_body::Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Pending => {}
            Poll::Ready(Some(Ok(_))) => {
                if let Some(s) = this.state.as_mut() {
                    s.first_byte();
                }
                // the last frame of a sized body: hyper will not poll again
                if this.inner.is_end_stream() {
                    if let Some(s) = this.state.take() {
                        s.finish();
                    }
                }
            }
            Poll::Ready(_) => {
                if let Some(s) = this.state.take() {
                    s.finish();
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn count(text: &str, prefix: &str) -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    #[tokio::test]
    async fn counts_each_request_once_and_fills_the_labels_from_the_record() {
        let m = Metrics::new();
        let layer = MetricsLayer::new(m.clone(), "/v1/messages", Dialect::Anthropic);
        let svc = layer.layer(tower::service_fn(|req: Request<Body>| async move {
            let rec = req.extensions().get::<RequestRecord>().unwrap().clone();
            rec.set_client(&Arc::from("alice"));
            rec.set_model("claude-sonnet-4.5");
            rec.attempt();
            rec.attempt();
            rec.retry(RetryCause::Throttle);
            rec.usage().set(crate::api::usage::Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                credits: Some(0.5),
                ..Default::default()
            });
            Ok::<_, std::convert::Infallible>(Response::new(Body::from("{}")))
        }));
        for _ in 0..3 {
            let resp = svc
                .clone()
                .oneshot(Request::post("/").body(Body::empty()).unwrap())
                .await
                .unwrap();
            resp.into_body().collect().await.unwrap();
        }
        let text = m.render();
        assert_eq!(
            count(
                &text,
                r#"kiro_gateway_requests_total{route="/v1/messages",dialect="anthropic",model="claude-sonnet-4.5",status="200",account="default",client="alice"}"#
            ),
            3.0,
            "{text}"
        );
        assert_eq!(
            count(&text, "kiro_gateway_upstream_attempts_total"),
            6.0,
            "{text}"
        );
        assert_eq!(
            count(
                &text,
                r#"kiro_gateway_upstream_retries_total{cause="throttle""#
            ),
            3.0
        );
        assert_eq!(count(&text, "kiro_gateway_input_tokens_total"), 30.0);
        assert_eq!(count(&text, "kiro_gateway_output_tokens_total"), 15.0);
        assert_eq!(count(&text, "kiro_gateway_credits{"), 1.5);
        assert_eq!(
            count(&text, "kiro_gateway_request_duration_seconds_count"),
            3.0
        );
        assert_eq!(
            count(&text, "kiro_gateway_time_to_first_byte_seconds_count"),
            3.0
        );
    }

    #[tokio::test]
    async fn a_dropped_stream_is_recorded_and_leaves_the_gauge() {
        let m = Metrics::new();
        let layer = MetricsLayer::new(m.clone(), "/v1/chat/completions", Dialect::OpenAi);
        let svc = layer.layer(tower::service_fn(|_req: Request<Body>| async move {
            let s = futures_util::stream::pending::<Result<Bytes, std::convert::Infallible>>();
            let mut r = Response::new(Body::from_stream(s));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/event-stream"),
            );
            Ok::<_, std::convert::Infallible>(r)
        }));
        let resp = svc
            .oneshot(Request::post("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(count(&m.render(), "kiro_gateway_streams_in_flight"), 1.0);
        drop(resp);
        let text = m.render();
        assert_eq!(count(&text, "kiro_gateway_streams_in_flight"), 0.0);
        assert_eq!(count(&text, "kiro_gateway_requests_total"), 1.0);
    }
}
