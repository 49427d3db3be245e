//! `RetryLayer` and `KiroAuthLayer`, the two layers directly above the Kiro client.
//!
//! **KiroAuthLayer** puts the current access token on every attempt. A 403 that says the token
//! is invalid forces a refresh (single-flight, and only if that token is still the current
//! one) and retries once; when that "refresh" only adopted a token another program wrote to
//! the credential source and the service refuses it as well, a real refresh follows (with the
//! source's current refresh token, under its lock) and one more try; any other 403 (a suspended account, a forbidden profile) is returned
//! as it is, with no refresh. With a Kiro API key there is nothing to refresh: a 403 other
//! than a suspension is reported as the key being refused ([`AuthError::ApiKeyRefused`]),
//! which is not retryable.
//!
//! [`AuthError::ApiKeyRefused`]: crate::auth::AuthError::ApiKeyRefused
//!
//! **RetryLayer** retries an attempt that failed before anything reached the client:
//! 429 (not a monthly quota), 5xx and connection errors with exponential backoff and jitter
//! (the `backoff` crate computes the schedule, `tokio::time` waits; an upstream retry hint is
//! honoured exactly when it is at most [`RetryConfig::retry_after_cap`]; a longer hint is not
//! waited out but handed to the client as `Retry-After`), within a bounded number of attempts
//! and a total time budget. A used-up monthly quota is never retried.
//! An attempt whose response headers and first event do not arrive within the first-token
//! timeout is abandoned (its connection dropped) and retried up to its own limit, then 504.
//! A 400 is never retried. Once the first event is back the response is handed up, so nothing
//! already forwarded is ever retried.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

use super::metrics::{RequestRecord, RetryCause};
use crate::auth::{TokenManager, TokenOrigin};
use crate::kiro::{BearerKind, Error, GenerateRequest, GenerateResponse};

type BoxFut<T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send>>;

/// Retry settings.
#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// Attempts in all for 429 / 5xx / connection errors.
    pub max_attempts: u32,
    /// The first backoff delay (doubling after each retry, ±50 % jitter).
    pub base_delay: Duration,
    /// The longest backoff delay.
    pub max_delay: Duration,
    /// No new attempt starts after this much time since the first.
    pub budget: Duration,
    /// `FIRST_TOKEN_TIMEOUT`: response headers plus the first event.
    pub first_token_timeout: Duration,
    /// `FIRST_TOKEN_MAX_RETRIES`: attempts in all that may time out before 504.
    pub first_token_max_attempts: u32,
    /// `RETRY_AFTER_MAX_SECS`: the longest upstream retry hint (`retryAfterMilliseconds`,
    /// `Retry-After`) the gateway waits out itself; a longer one goes straight to the client
    /// as its `Retry-After`.
    pub retry_after_cap: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            base_delay: Duration::from_millis(1000),
            max_delay: Duration::from_secs(10),
            budget: Duration::from_secs(60),
            first_token_timeout: Duration::from_secs(15),
            first_token_max_attempts: 3,
            retry_after_cap: Duration::from_secs(10),
        }
    }
}

/// The delay schedule: exponential from `base`, doubling, ±50 % jitter, capped.
fn schedule(cfg: &RetryConfig) -> backoff::ExponentialBackoff {
    backoff::ExponentialBackoffBuilder::new()
        .with_initial_interval(cfg.base_delay)
        .with_multiplier(2.0)
        .with_randomization_factor(0.5)
        .with_max_interval(cfg.max_delay)
        .with_max_elapsed_time(None)
        .build()
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct RetryLayer {
    cfg: Arc<RetryConfig>,
}

impl RetryLayer {
    /// Retry as `cfg` says.
    pub fn new(cfg: RetryConfig) -> Self {
        RetryLayer { cfg: Arc::new(cfg) }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = RetryService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            cfg: self.cfg.clone(),
        }
    }
}

/// The service of [`RetryLayer`]: calls `S` until an attempt's first event is back, or the
/// failure is not worth another attempt.
#[derive(Debug, Clone)]
pub struct RetryService<S> {
    inner: S,
    cfg: Arc<RetryConfig>,
}

impl<S> RetryService<S> {
    inner_service_accessors!();
}

/// Await the response and its first event within `limit`; the first event is put back in
/// front of the stream.
async fn first_event<F>(fut: F, limit: Duration) -> Result<GenerateResponse, Error>
where
    F: Future<Output = Result<GenerateResponse, Error>>,
{
    let attempt = async { fut.await?.first_event().await };
    match tokio::time::timeout(limit, attempt).await {
        Ok(r) => r,
        Err(_) => Err(Error::FirstByteTimeout(limit)),
    }
}

impl<S> Service<GenerateRequest> for RetryService<S>
where
    S: Service<GenerateRequest, Response = GenerateResponse, Error = Error>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = GenerateResponse;
    type Error = Error;
    // Boxed: between attempts the future awaits a backoff sleep and the spare service's
    // readiness, and each attempt awaits its first event under a timeout; that is an `async`
    // loop, not a state a hand-written future could hold cheaply.
    type Future = BoxFut<GenerateResponse>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: GenerateRequest) -> Self::Future {
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        let mut spare = self.inner.clone();
        let cfg = self.cfg.clone();
        Box::pin(async move {
            let mut req = req;
            // shared by every attempt's clone: the auth layer refreshes once per request
            req.extensions.insert(RefreshBudget::default());
            let start = tokio::time::Instant::now();
            let mut delays = schedule(&cfg);
            let max_attempts = cfg.max_attempts.max(1) + cfg.first_token_max_attempts.max(1) - 1;
            let mut status_failures = 0u32;
            let mut timeouts = 0u32;
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                let mut r = req.clone();
                r.attempt = attempt;
                r.max_attempts = max_attempts;
                // the layers below may act on the deadline themselves (the account pool
                // counts a timeout against the account)
                r.extensions.insert(FirstTokenDeadline(
                    tokio::time::Instant::now() + cfg.first_token_timeout,
                ));
                let fut = if attempt == 1 {
                    ready.call(r)
                } else {
                    use tower::ServiceExt;
                    spare.ready().await?;
                    spare.call(r)
                };
                let err = match first_event(fut, cfg.first_token_timeout).await {
                    Ok(resp) => return Ok(resp),
                    Err(e) => e,
                };
                let wait = match &err {
                    Error::FirstByteTimeout(_) => {
                        timeouts += 1;
                        if timeouts >= cfg.first_token_max_attempts.max(1) {
                            return Err(err);
                        }
                        tracing::warn!(
                            attempt,
                            "no first token within {:?}; retrying",
                            cfg.first_token_timeout
                        );
                        Duration::ZERO
                    }
                    e if e.failure().is_retryable() => {
                        status_failures += 1;
                        if status_failures >= cfg.max_attempts.max(1) {
                            return Err(err);
                        }
                        let hint = match e.failure() {
                            crate::kiro::Failure::Throttle(h) => h,
                            _ => None,
                        };
                        let computed = delays.next_backoff_duration(cfg.max_delay);
                        match hint {
                            Some(h) if h > cfg.retry_after_cap => {
                                tracing::info!(
                                    attempt,
                                    hint_ms = h.as_millis() as u64,
                                    "the service asks for a longer wait than RETRY_AFTER_MAX_SECS; passing it to the client"
                                );
                                return Err(err);
                            }
                            Some(h) => h,
                            None => computed,
                        }
                    }
                    _ => return Err(err),
                };
                if start.elapsed() + wait >= cfg.budget {
                    tracing::warn!(attempt, "retry budget of {:?} spent", cfg.budget);
                    return Err(err);
                }
                if let Some(r) = req.extensions.get::<RequestRecord>() {
                    r.retry(RetryCause::of(&err));
                }
                tracing::info!(attempt, error = %err, wait_ms = wait.as_millis() as u64, "retrying the Kiro call");
                tokio::time::sleep(wait).await;
            }
        })
    }
}

pub use crate::context::FirstTokenDeadline;

trait NextDuration {
    fn next_backoff_duration(&mut self, cap: Duration) -> Duration;
}

impl NextDuration for backoff::ExponentialBackoff {
    fn next_backoff_duration(&mut self, cap: Duration) -> Duration {
        use backoff::backoff::Backoff;
        self.next_backoff().unwrap_or(cap).min(cap)
    }
}

pub use crate::context::RefreshBudget;

/// See the module docs. Its `Debug` names the credential source, never a token.
#[derive(Debug, Clone)]
pub struct KiroAuthLayer {
    tokens: TokenManager,
}

impl KiroAuthLayer {
    /// Put the tokens of `tokens` on every attempt.
    pub fn new(tokens: TokenManager) -> Self {
        KiroAuthLayer { tokens }
    }
}

impl<S> Layer<S> for KiroAuthLayer {
    type Service = KiroAuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        KiroAuthService {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// The service of [`KiroAuthLayer`]: sets the bearer of each attempt, then calls `S`.
#[derive(Debug, Clone)]
pub struct KiroAuthService<S> {
    inner: S,
    tokens: TokenManager,
}

impl<S> KiroAuthService<S> {
    inner_service_accessors!();
}

impl<S> Service<GenerateRequest> for KiroAuthService<S>
where
    S: Service<GenerateRequest, Response = GenerateResponse, Error = Error>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = GenerateResponse;
    type Error = Error;
    // Boxed: the token may have to be refreshed (awaited, single-flight) before the call, and
    // an invalid-token 403 awaits a forced refresh and a second call.
    type Future = BoxFut<GenerateResponse>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: GenerateRequest) -> Self::Future {
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        let mut spare = self.inner.clone();
        let tokens = self.tokens.clone();
        Box::pin(async move {
            let budget = req
                .extensions
                .get::<RefreshBudget>()
                .cloned()
                .unwrap_or_default();
            let record = req.extensions.get::<RequestRecord>().cloned();
            let token = tokens.access_token().await?;
            req.token = Some(token.token.clone());
            req.bearer_kind = tokens.bearer_kind();
            if let Some(r) = &record {
                r.attempt();
            }
            match ready.call(req.clone()).await {
                Err(Error::Status(s))
                    if req.bearer_kind == BearerKind::ApiKey
                        && s.status == http::StatusCode::FORBIDDEN
                        && !s.is_suspended() =>
                {
                    tracing::warn!(message = %s.message, "Kiro refused the API key");
                    Err(Error::Auth(TokenManager::api_key_refused(
                        403,
                        s.message.clone(),
                    )))
                }
                Err(Error::Status(s)) if s.is_invalid_token() && budget.take() => {
                    use tower::ServiceExt;
                    tracing::info!("Kiro rejected the access token; refreshing once");
                    let fresh = tokens.force_refresh(&token).await?;
                    req.token = Some(fresh.token.clone());
                    if let Some(r) = &record {
                        r.retry(RetryCause::InvalidToken);
                        r.attempt();
                    }
                    let mut last = spare.clone();
                    spare.ready().await?;
                    match spare.call(req.clone()).await {
                        // the token came from the source (the IDE or kiro-cli refreshed),
                        // not from a refresh of ours, and it is dead too (a rotation revoked
                        // it): the one refresh this request may cause has not happened yet
                        Err(Error::Status(s))
                            if s.is_invalid_token() && fresh.origin != TokenOrigin::Refreshed =>
                        {
                            tracing::info!("Kiro rejected the access token taken from the credential source as well; refreshing");
                            let real = tokens.refresh_without_adopting(&fresh).await?;
                            req.token = Some(real.token);
                            if let Some(r) = &record {
                                r.retry(RetryCause::InvalidToken);
                                r.attempt();
                            }
                            last.ready().await?;
                            last.call(req).await
                        }
                        other => other,
                    }
                }
                other => other,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kiro::UpstreamStatus;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};
    use std::sync::atomic::{AtomicU32, Ordering};

    fn status(code: u16) -> Error {
        Error::Status(Box::new(UpstreamStatus::from_parts(
            StatusCode::from_u16(code).unwrap(),
            &HeaderMap::new(),
            Bytes::from_static(br#"{"message":"x","reason":null}"#),
        )))
    }

    fn ok_response() -> GenerateResponse {
        GenerateResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            events: Box::pin(futures_util::stream::iter(vec![Ok(
                crate::kiro::Event::Text {
                    content: "hi".into(),
                },
            )])),
        }
    }

    /// A service that fails with the scripted errors, then succeeds; counts calls.
    fn scripted(
        errors: Vec<u16>,
        calls: Arc<AtomicU32>,
    ) -> impl Service<
        GenerateRequest,
        Response = GenerateResponse,
        Error = Error,
        Future = BoxFut<GenerateResponse>,
    > + Clone {
        let errors = Arc::new(errors);
        tower::service_fn(move |req: GenerateRequest| {
            let n = calls.fetch_add(1, Ordering::SeqCst) as usize;
            let errors = errors.clone();
            Box::pin(async move {
                assert_eq!(req.attempt as usize, n + 1);
                match errors.get(n) {
                    Some(code) => Err(status(*code)),
                    None => Ok(ok_response()),
                }
            }) as BoxFut<GenerateResponse>
        })
    }

    #[tokio::test(start_paused = true)]
    async fn retries_429_and_5xx_then_succeeds() {
        let calls = Arc::new(AtomicU32::new(0));
        let svc =
            RetryLayer::new(RetryConfig::default()).layer(scripted(vec![429, 503], calls.clone()));
        let before = tokio::time::Instant::now();
        let resp = tower::ServiceExt::oneshot(svc, GenerateRequest::new(Bytes::new())).await;
        assert!(resp.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // two backoff waits happened (0.5-1.5 s, then 1-3 s)
        assert!(before.elapsed() >= Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_with_the_last_upstream_error() {
        let calls = Arc::new(AtomicU32::new(0));
        let svc = RetryLayer::new(RetryConfig::default())
            .layer(scripted(vec![500, 502, 503, 504], calls.clone()));
        let err = tower::ServiceExt::oneshot(svc, GenerateRequest::new(Bytes::new()))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, Error::Status(s) if s.status == 503));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_a_400() {
        let calls = Arc::new(AtomicU32::new(0));
        let svc = RetryLayer::new(RetryConfig::default()).layer(scripted(vec![400], calls.clone()));
        let err = tower::ServiceExt::oneshot(svc, GenerateRequest::new(Bytes::new()))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, Error::Status(s) if s.status == 400));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    fn with_hint(code: u16, body: &'static str, retry_after: &str) -> Error {
        let mut h = HeaderMap::new();
        h.insert("retry-after", retry_after.parse().unwrap());
        Error::Status(Box::new(UpstreamStatus::from_parts(
            StatusCode::from_u16(code).unwrap(),
            &h,
            Bytes::from_static(body.as_bytes()),
        )))
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_hint_is_waited_out_up_to_the_cap_and_no_longer() {
        for (hint, cap, calls_expected, waited) in [
            ("3", 10, 2, Some(Duration::from_secs(3))),
            ("30", 10, 1, None),
        ] {
            let calls = Arc::new(AtomicU32::new(0));
            let c = calls.clone();
            let svc = tower::service_fn(move |_req: GenerateRequest| {
                let n = c.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move {
                    if n == 0 {
                        Err(with_hint(429, r#"{"message":"Rate exceeded"}"#, hint))
                    } else {
                        Ok(ok_response())
                    }
                }) as BoxFut<GenerateResponse>
            });
            let cfg = RetryConfig {
                retry_after_cap: Duration::from_secs(cap),
                ..Default::default()
            };
            let before = tokio::time::Instant::now();
            let r = tower::ServiceExt::oneshot(
                RetryLayer::new(cfg).layer(svc),
                GenerateRequest::new(Bytes::new()),
            )
            .await;
            assert_eq!(calls.load(Ordering::SeqCst), calls_expected, "hint {hint}");
            match waited {
                Some(w) => {
                    assert!(r.is_ok());
                    assert!(
                        before.elapsed() >= w && before.elapsed() < w + Duration::from_millis(50)
                    );
                }
                None => {
                    let e = r.err().unwrap();
                    assert!(
                        matches!(&e, Error::Status(s) if s.retry_after == Some(Duration::from_secs(30)))
                    );
                    assert_eq!(crate::error::GatewayError::from(e).retry_after(), Some(30));
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_monthly_quota_is_never_retried() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let svc = tower::service_fn(move |_req: GenerateRequest| {
            c.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                Err(with_hint(
                    429,
                    r#"{"message":"quota","reason":"MONTHLY_REQUEST_COUNT"}"#,
                    "1",
                ))
            }) as BoxFut<GenerateResponse>
        });
        let r = tower::ServiceExt::oneshot(
            RetryLayer::new(RetryConfig::default()).layer(svc),
            GenerateRequest::new(Bytes::new()),
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn first_token_timeout_is_retried_then_504() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let slow = tower::service_fn(move |_req: GenerateRequest| {
            c.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(ok_response())
            }) as BoxFut<GenerateResponse>
        });
        let svc = RetryLayer::new(RetryConfig::default()).layer(slow);
        let err = tower::ServiceExt::oneshot(svc, GenerateRequest::new(Bytes::new()))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, Error::FirstByteTimeout(_)));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let g = crate::error::GatewayError::from(err);
        assert_eq!(g.status(), 504);
    }
}
