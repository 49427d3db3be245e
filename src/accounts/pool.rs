//! [`AccountPool`]: the service at the bottom of every chat stack. It takes an account for
//! each attempt (the selection's pick, a due probe, the conversation's binding), runs the
//! attempt on it, records the outcome in the account's health, and fails over to the next
//! account before anything has gone up.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_service::Service;

use super::account::{Account, AccountSnapshot};
use super::health::{AccountState, Avail};
use super::selection::{BindingStore, Chooser, MemoryBindingStore};
use super::PoolConfig;
use crate::auth::TokenManager;
use crate::context::{
    CaptureHandle, ConversationKey, FirstTokenDeadline, RequestRecord, RetryCause,
};
use crate::kiro::{Error, Event, GenerateRequest, GenerateResponse, KiroBody};

struct PoolInner {
    accounts: Vec<Arc<Account>>,
    cfg: PoolConfig,
    /// Conversation → account name.
    bindings: Arc<dyn BindingStore>,
    chooser: Chooser,
}

/// See the module docs. Cheap to clone; a [`tower::Service`] of [`GenerateRequest`]s.
#[derive(Clone)]
pub struct AccountPool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for AccountPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountPool")
            .field("accounts", &self.inner.accounts)
            .field("cfg", &self.inner.cfg)
            .finish()
    }
}

/// An account taken for one attempt: counted in flight until dropped (which, on success, is
/// when the answer's stream ends or is dropped).
struct Lease {
    account: Arc<Account>,
    probe: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.account.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.probe {
            // an abandoned probe (client gone, first-token timeout) lets the next one through
            self.account.health().probing = false;
        }
    }
}

/// Every account is unavailable: why, and when one is back.
#[derive(Debug, Clone)]
struct AllDown {
    retry_after: Option<Duration>,
    rate_limited: bool,
    /// Every account is out for a used-up quota.
    quota_exhausted: bool,
    detail: String,
}

impl AccountPool {
    /// A pool of `accounts` (at least one), tried in the order given where the strategy
    /// needs an order; conversation bindings kept in memory ([`MemoryBindingStore`]).
    pub fn new(accounts: Vec<Account>, cfg: PoolConfig) -> Result<Self, String> {
        let bindings = Arc::new(MemoryBindingStore::new(cfg.sticky_ttl, cfg.sticky_max));
        Self::with_bindings(accounts, cfg, bindings)
    }

    /// [`new`](Self::new), with the conversation bindings kept in `bindings` (see
    /// [`BindingStore`] for what a shared store must guarantee). Each account's health is
    /// kept where the account says ([`Account::with_health_store`]).
    pub fn with_bindings(
        accounts: Vec<Account>,
        cfg: PoolConfig,
        bindings: Arc<dyn BindingStore>,
    ) -> Result<Self, String> {
        if accounts.is_empty() {
            return Err("an account pool needs at least one account".into());
        }
        let mut seen = std::collections::HashSet::new();
        for a in &accounts {
            if !seen.insert(a.name.clone()) {
                return Err(format!("the account name {:?} is used twice", a.name));
            }
        }
        Ok(Self::build(accounts, cfg, bindings))
    }

    fn build(accounts: Vec<Account>, cfg: PoolConfig, bindings: Arc<dyn BindingStore>) -> Self {
        AccountPool {
            inner: Arc::new(PoolInner {
                chooser: Chooser::new(cfg.strategy, accounts.len()),
                accounts: accounts.into_iter().map(Arc::new).collect(),
                cfg,
                bindings,
            }),
        }
    }

    /// A pool of one account (the single-account form: no failover, so no bindings).
    pub fn single(account: Account) -> Self {
        let cfg = PoolConfig::default();
        let bindings = Arc::new(MemoryBindingStore::new(cfg.sticky_ttl, cfg.sticky_max));
        Self::build(vec![account], cfg, bindings)
    }

    /// Its accounts, in configuration order.
    pub fn accounts(&self) -> &[Arc<Account>] {
        &self.inner.accounts
    }

    /// The first account (the one model lists and `/health`'s auth block come from).
    pub fn primary(&self) -> &Arc<Account> {
        &self.inner.accounts[0]
    }

    /// Its settings.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.cfg
    }

    /// More than one account: failover and circuit breaking apply.
    pub fn is_pooled(&self) -> bool {
        self.inner.accounts.len() > 1
    }

    /// Whether some account could take a request now (a single account gets every request
    /// anyway; this says whether it is known not to be able to serve). An account whose
    /// token refresh fails, with no unexpired token left, cannot.
    pub fn can_serve(&self) -> bool {
        let now = Instant::now();
        self.inner.accounts.iter().any(|a| a.available(now))
    }

    /// Try again, now, the refresh of every account that has no usable token because its
    /// refresh failed, when its next try is due (the pool's cool-down for a refresh-failing
    /// account; the token manager's failure cool-down otherwise). `/health` calls this
    /// before it answers, so that it reports what a request would meet, and so that an
    /// account whose credentials were fixed (signed in again) comes back even while load
    /// balancers send no traffic.
    pub async fn recheck_credentials(&self) {
        for a in &self.inner.accounts {
            let Some(tokens) = a.tokens.clone() else {
                continue;
            };
            if tokens.refresh_problem().is_none() {
                continue;
            }
            let now = Instant::now();
            let probe = {
                let mut h = a.health();
                match h.avail(now) {
                    Avail::Down(_) => continue,
                    Avail::Probe => {
                        h.probing = true;
                        true
                    }
                    Avail::Ready => false,
                }
            };
            a.in_flight.fetch_add(1, Ordering::Relaxed);
            let mut lease = Lease {
                account: a.clone(),
                probe,
            };
            match tokens.access_token().await {
                Ok(_) => {
                    let mut h = a.health();
                    h.probing &= !lease.probe;
                    lease.probe = false;
                    if h.state != AccountState::Ok {
                        h.recover(&a.name);
                    }
                }
                Err(e) => {
                    self.judge(&mut lease, &Error::Auth(e));
                }
            }
        }
    }

    /// Clear an account's cool-down, parked, refresh-failing or suspended state. `false`:
    /// no account of that name.
    pub fn reset(&self, name: &str) -> bool {
        let Some(a) = self.inner.accounts.iter().find(|a| &*a.name == name) else {
            return false;
        };
        let mut h = a.health();
        let was = h.state;
        h.clear();
        tracing::info!(account = %a.name, was = was.as_str(), "account reset by an admin");
        true
    }

    /// Every account's state and figures.
    pub fn snapshot(&self) -> Vec<AccountSnapshot> {
        let now = Instant::now();
        let wall = SystemTime::now();
        self.inner
            .accounts
            .iter()
            .map(|a| {
                let refresh_error = a.refresh_problem();
                let h = a.health();
                let available = !matches!(h.avail(now), Avail::Down(_)) && refresh_error.is_none();
                let state = match h.state {
                    AccountState::Ok if refresh_error.is_some() => AccountState::RefreshFailing,
                    s => s,
                };
                let status = a.tokens.as_ref().map(TokenManager::status);
                let expires = status.as_ref().and_then(|s| s.expires_at);
                AccountSnapshot {
                    name: a.name.to_string(),
                    state: state.as_str(),
                    available,
                    auth_type: status.as_ref().map(|s| s.auth_kind.as_str()),
                    source: a.tokens.as_ref().map(|t| t.source().kind_name()),
                    protocol: a.client.as_ref().map(|c| c.config().protocol.as_str()),
                    region: a.tokens.as_ref().map(|t| t.api_region().to_owned()),
                    token_expires_at: expires.map(crate::auth::source::format_expiry),
                    token_expires_in_secs: expires
                        .and_then(|e| e.duration_since(wall).ok())
                        .map(|d| d.as_secs()),
                    retry_at: h.until_wall.map(crate::auth::source::format_expiry),
                    retry_in_secs: h.until.map(|t| t.saturating_duration_since(now).as_secs()),
                    last_error: h.last_error.as_ref().map(|(_, m)| m.clone()),
                    refresh_error,
                    last_error_at: h
                        .last_error
                        .as_ref()
                        .map(|(t, _)| crate::auth::source::format_expiry(*t)),
                    priority: a.priority,
                    weight: a.weight,
                    in_flight: a.in_flight.load(Ordering::Relaxed),
                    requests: a.requests.load(Ordering::Relaxed),
                    errors: a.errors.load(Ordering::Relaxed),
                    credits: a.micro_credits.load(Ordering::Relaxed) as f64 / 1e6,
                    token_refreshes: a.tokens.as_ref().map_or(0, TokenManager::refresh_count),
                    token_refresh_failures: a
                        .tokens
                        .as_ref()
                        .map_or(0, TokenManager::refresh_failure_count),
                }
            })
            .collect()
    }

    /// Take an account for an attempt, never one in `tried`: the conversation's if it can
    /// serve, else a probe that is due (half-open), else the strategy's pick among the ready.
    fn pick(
        &self,
        key: Option<ConversationKey>,
        tried: &[usize],
    ) -> Result<(usize, Lease), AllDown> {
        let p = &*self.inner;
        let now = Instant::now();
        let lease = |i: usize, probe: bool| {
            let a = p.accounts[i].clone();
            a.in_flight.fetch_add(1, Ordering::Relaxed);
            (i, Lease { account: a, probe })
        };
        if !self.is_pooled() {
            return Ok(lease(0, false));
        }
        let mut ready = Vec::with_capacity(p.accounts.len());
        let mut probes = Vec::new();
        for (i, a) in p.accounts.iter().enumerate() {
            if tried.contains(&i) {
                continue;
            }
            match a.health().avail(now) {
                Avail::Ready => ready.push(i),
                Avail::Probe => probes.push(i),
                Avail::Down(_) => {}
            }
        }
        // the conversation's account, if it is still one of ours
        let sticky = key
            .and_then(|k| p.bindings.get(k))
            .and_then(|name| p.accounts.iter().position(|a| a.name == name));
        // a probe is claimed under the account's health guard (two requests may race for it)
        let claim = |i: usize| p.accounts[i].health().claim_probe(now);
        let mut choice = None;
        if let Some(s) = sticky {
            if ready.contains(&s) {
                choice = Some((s, false));
            } else if probes.contains(&s) && claim(s) {
                choice = Some((s, true));
            }
        }
        if choice.is_none() {
            choice = probes.iter().find(|i| claim(**i)).map(|i| (*i, true));
        }
        if choice.is_none() && !ready.is_empty() {
            choice = Some((p.chooser.choose(&p.accounts, &ready), false));
        }
        let Some((i, probe)) = choice else {
            return Err(self.all_down(now));
        };
        if let Some(k) = key {
            p.bindings.bind(k, &p.accounts[i].name);
        }
        Ok(lease(i, probe))
    }

    /// Why no account can take the request, and the earliest one is back.
    fn all_down(&self, now: Instant) -> AllDown {
        let mut earliest: Option<Instant> = None;
        let mut rate_limited = true;
        let mut quota_exhausted = true;
        let mut reasons = Vec::new();
        for a in &self.inner.accounts {
            let h = a.health();
            match h.avail(now) {
                Avail::Down(t) => {
                    if let Some(t) = t {
                        earliest = Some(earliest.map_or(t, |e| e.min(t)));
                    }
                    rate_limited &= h.rate_limited;
                    quota_exhausted &= h.quota;
                    reasons.push(format!("{}: {}", a.name, h.down_reason(now)));
                }
                _ => {
                    rate_limited = false;
                    quota_exhausted = false;
                    reasons.push(format!("{}: failed for this request", a.name));
                }
            }
        }
        AllDown {
            retry_after: earliest.map(|t| t.saturating_duration_since(now)),
            rate_limited,
            quota_exhausted,
            detail: reasons.join("; "),
        }
    }

    /// Record a failed attempt; `true`: the request should move to another account.
    fn judge(&self, lease: &mut Lease, e: &Error) -> bool {
        let a = &lease.account;
        a.errors.fetch_add(1, Ordering::Relaxed);
        let probe = std::mem::take(&mut lease.probe);
        let move_on = a
            .health()
            .on_failure(e, probe, &self.inner.cfg, self.is_pooled(), &a.name);
        move_on
    }
}

impl Service<GenerateRequest> for AccountPool {
    type Response = GenerateResponse;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<GenerateResponse, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // each account's service is made ready when it is called
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: GenerateRequest) -> Self::Future {
        let pool = self.clone();
        Box::pin(async move {
            let key = req.extensions.get::<ConversationKey>().copied();
            let record = req.extensions.get::<RequestRecord>().cloned();
            let body = req.extensions.get::<KiroBody>().cloned();
            let capture = req.extensions.get::<CaptureHandle>().cloned();
            let pooled = pool.is_pooled();
            let mut tried: Vec<usize> = Vec::new();
            loop {
                let deadline = req.extensions.get::<FirstTokenDeadline>().map(|d| d.0);
                let started = Instant::now();
                let (i, mut lease) = match pool.pick(key, &tried) {
                    Ok(x) => x,
                    Err(down) => {
                        tracing::warn!(detail = %down.detail, "no Kiro account can serve this request");
                        return Err(Error::NoAccount {
                            retry_after: down.retry_after,
                            rate_limited: down.rate_limited,
                            quota_exhausted: down.quota_exhausted,
                            detail: down.detail,
                        });
                    }
                };
                tried.push(i);
                let account = lease.account.clone();
                if let Some(r) = &record {
                    r.set_account(&account.name);
                }
                account.requests.fetch_add(1, Ordering::Relaxed);
                let attempt = attempt_on(
                    &account,
                    req.clone(),
                    body.as_ref(),
                    capture.as_ref(),
                    pooled,
                );
                // the retry layer gives up on the attempt at this deadline; with other accounts
                // the pool notices first, so the silence counts against this account
                let result = match deadline.filter(|_| pooled) {
                    Some(d) => match tokio::time::timeout_at(d, attempt).await {
                        Ok(r) => r,
                        Err(_) => {
                            // counted against this account, but not failed over here: the
                            // attempt's time is up, the retry layer makes the next one
                            let e = Error::FirstByteTimeout(d.saturating_duration_since(started));
                            pool.judge(&mut lease, &e);
                            return Err(e);
                        }
                    },
                    None => attempt.await,
                };
                match result {
                    Ok(resp) => {
                        let probe = std::mem::take(&mut lease.probe);
                        account.health().on_success(probe, &account.name);
                        return Ok(metered(resp, lease));
                    }
                    Err(e) => {
                        if !pool.judge(&mut lease, &e) {
                            return Err(e);
                        }
                        tracing::info!(account = %account.name, error = %e, "failing over to another account");
                        if let Some(r) = &record {
                            r.retry(RetryCause::Failover);
                        }
                        drop(lease);
                    }
                }
            }
        })
    }
}

/// One attempt on `account`: its body fitted to the account when needed, then its service
/// called; with somewhere to fail over to, an error in place of the first event counts as the
/// attempt's failure (nothing has gone up yet).
async fn attempt_on(
    account: &Account,
    mut req: GenerateRequest,
    body: Option<&KiroBody>,
    capture: Option<&CaptureHandle>,
    pooled: bool,
) -> Result<GenerateResponse, Error> {
    if let (Some(b), Some(tokens)) = (body, account.tokens()) {
        // the profile ARN may only be known once the account has its first token (a desktop
        // refresh returns it): get that first; a refused refresh is this account's failure
        tokens.access_token().await?;
        if let Some(bytes) = b.for_account(account.profile_arn().as_deref(), account.origin) {
            req.body = bytes?;
            if let Some(c) = capture {
                c.set_kiro_body(&req.body);
            }
        }
    }
    if pooled {
        if let Some(c) = capture {
            c.log(&format!("account {}", account.name));
        }
    }
    let resp = account.service.clone().oneshot(req).await?;
    if pooled {
        resp.first_event().await
    } else {
        Ok(resp)
    }
}

/// The answer's events, adding metered credits to the account and holding its lease (in
/// flight) until the stream ends or is dropped.
fn metered(mut resp: GenerateResponse, lease: Lease) -> GenerateResponse {
    let events = std::mem::replace(&mut resp.events, Box::pin(futures_util::stream::empty()));
    let mut lease = Some(lease);
    resp.events = Box::pin(events.map(move |item| {
        if let (Ok(Event::Metering(m)), Some(l)) = (&item, &lease) {
            if m.usage.is_finite() && m.usage > 0.0 {
                l.account
                    .micro_credits
                    .fetch_add((m.usage * 1e6).round() as u64, Ordering::Relaxed);
            }
        }
        if item.is_err() {
            // the stream's own end comes next; the account is free now
            lease.take();
        }
        item
    }));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::Strategy;
    use crate::kiro::UpstreamStatus;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};
    use std::sync::atomic::AtomicU64;
    use tower::util::BoxCloneSyncService;

    fn status(code: u16, body: &'static str) -> Error {
        Error::Status(Box::new(UpstreamStatus::from_parts(
            StatusCode::from_u16(code).unwrap(),
            &HeaderMap::new(),
            Bytes::from_static(body.as_bytes()),
        )))
    }

    fn ok() -> GenerateResponse {
        GenerateResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            events: Box::pin(futures_util::stream::iter(vec![Ok(Event::Text {
                content: "hi".into(),
            })])),
        }
    }

    /// An account answering with `f(call number)`, counting calls.
    fn fake(name: &str, calls: Arc<AtomicU64>, f: fn(u64) -> Result<(), Error>) -> Account {
        let svc = tower::service_fn(move |_r: GenerateRequest| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { f(n).map(|_| ok()) }
        });
        Account::new(name, BoxCloneSyncService::new(svc))
    }

    fn throttled(_: u64) -> Result<(), Error> {
        Err(status(429, r#"{"message":"Rate exceeded"}"#))
    }
    fn quota(_: u64) -> Result<(), Error> {
        Err(status(
            429,
            r#"{"message":"limit","reason":"MONTHLY_REQUEST_COUNT"}"#,
        ))
    }
    fn healthy(_: u64) -> Result<(), Error> {
        Ok(())
    }
    fn bad_request(_: u64) -> Result<(), Error> {
        Err(status(400, r#"{"message":"Improperly formed request."}"#))
    }

    fn pool(accounts: Vec<Account>, strategy: Strategy) -> AccountPool {
        AccountPool::new(
            accounts,
            PoolConfig {
                strategy,
                ..Default::default()
            },
        )
        .unwrap()
    }

    async fn send(p: &AccountPool, key: Option<u64>) -> Result<GenerateResponse, Error> {
        let mut r = GenerateRequest::new(Bytes::from_static(b"{}"));
        if let Some(k) = key {
            r.extensions.insert(ConversationKey(k));
        }
        p.clone().oneshot(r).await
    }

    #[tokio::test]
    async fn a_throttled_and_an_exhausted_account_fail_over_to_the_healthy_one() {
        let c: Vec<_> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let p = pool(
            vec![
                fake("t", c[0].clone(), throttled),
                fake("q", c[1].clone(), quota),
                fake("h", c[2].clone(), healthy),
            ],
            Strategy::Priority,
        );
        for _ in 0..5 {
            assert!(send(&p, None).await.is_ok());
        }
        // each bad account was tried once, then left alone
        assert_eq!(c[0].load(Ordering::SeqCst), 1);
        assert_eq!(c[1].load(Ordering::SeqCst), 1);
        assert_eq!(c[2].load(Ordering::SeqCst), 5);
        let s = p.snapshot();
        assert_eq!(
            s.iter().map(|a| a.state).collect::<Vec<_>>(),
            ["cooling", "parked", "ok"]
        );
        assert!(s[1].retry_in_secs.unwrap() > 60);
    }

    #[tokio::test]
    async fn all_down_says_when_to_come_back() {
        let c = Arc::new(AtomicU64::new(0));
        let p = pool(
            vec![
                fake("a", c.clone(), throttled),
                fake("b", c.clone(), throttled),
            ],
            Strategy::RoundRobin,
        );
        let e = send(&p, None).await.err().unwrap();
        match &e {
            Error::NoAccount {
                retry_after,
                rate_limited,
                quota_exhausted,
                detail,
            } => {
                assert!(rate_limited);
                assert!(!quota_exhausted);
                let r = retry_after.unwrap();
                assert!(
                    r > Duration::from_secs(25) && r <= Duration::from_secs(30),
                    "{r:?}"
                );
                assert!(
                    detail.contains("a: cooling") && detail.contains("b: cooling"),
                    "{detail}"
                );
            }
            other => panic!("{other:?}"),
        }
        let g = crate::error::GatewayError::from(e);
        assert_eq!(g.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(g.retry_after(), Some(30));
        assert!(g.is_retryable(), "throttles pass: x-should-retry: true");
        assert!(!p.can_serve());
        assert!(p.reset("a"));
        assert!(p.can_serve());
    }

    /// Every account parked for a used-up quota: a 429 no retry can fix (`x-should-retry:
    /// false`), unlike an all-throttled pool; one throttled account among them makes it
    /// worth a retry again.
    #[tokio::test]
    async fn all_accounts_out_of_quota_is_a_429_no_retry_fixes() {
        let c = Arc::new(AtomicU64::new(0));
        let p = pool(
            vec![fake("a", c.clone(), quota), fake("b", c.clone(), quota)],
            Strategy::RoundRobin,
        );
        // (rate_limited, quota_exhausted) of an all-down answer
        let why = |e: &Error| match e {
            Error::NoAccount {
                rate_limited,
                quota_exhausted,
                ..
            } => (*rate_limited, *quota_exhausted),
            other => panic!("{other:?}"),
        };
        let e = send(&p, None).await.err().unwrap();
        assert_eq!(why(&e), (true, true));
        let g = crate::error::GatewayError::from(e);
        assert_eq!(g.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(g.code(), Some("all_accounts_rate_limited"));
        assert!(!g.is_retryable());

        let p = pool(
            vec![fake("a", c.clone(), quota), fake("b", c.clone(), throttled)],
            Strategy::RoundRobin,
        );
        let e = send(&p, None).await.err().unwrap();
        assert_eq!(why(&e), (true, false));
        assert!(crate::error::GatewayError::from(e).is_retryable());
    }

    #[tokio::test]
    async fn a_bad_request_is_the_requests_fault_not_the_accounts() {
        let c = Arc::new(AtomicU64::new(0));
        let p = pool(
            vec![
                fake("a", c.clone(), bad_request),
                fake("b", c.clone(), healthy),
            ],
            Strategy::Priority,
        );
        let e = send(&p, None).await.err().unwrap();
        assert!(matches!(e, Error::Status(s) if s.status == 400));
        assert_eq!(c.load(Ordering::SeqCst), 1);
        assert_eq!(p.snapshot()[0].state, "ok");
    }

    #[tokio::test]
    async fn a_conversation_stays_on_its_account() {
        let c: Vec<_> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let p = pool(
            (0..3)
                .map(|i| fake(&format!("a{i}"), c[i].clone(), healthy))
                .collect(),
            Strategy::RoundRobin,
        );
        for _ in 0..10 {
            assert!(send(&p, Some(42)).await.is_ok());
        }
        let counts: Vec<u64> = c.iter().map(|x| x.load(Ordering::SeqCst)).collect();
        assert_eq!(counts.iter().sum::<u64>(), 10);
        assert_eq!(counts.iter().filter(|n| **n == 10).count(), 1, "{counts:?}");
        // without a key, round robin spreads
        for _ in 0..9 {
            assert!(send(&p, None).await.is_ok());
        }
        let counts: Vec<u64> = c.iter().map(|x| x.load(Ordering::SeqCst)).collect();
        assert!(counts.iter().all(|n| *n >= 3), "{counts:?}");
    }

    #[tokio::test]
    async fn repeated_5xx_cools_an_account_after_the_threshold() {
        let c = Arc::new(AtomicU64::new(0));
        fn failing(_: u64) -> Result<(), Error> {
            Err(status(503, r#"{"message":"unavailable"}"#))
        }
        let p = pool(
            vec![
                fake("a", c.clone(), failing),
                fake("b", Arc::new(AtomicU64::new(0)), healthy),
            ],
            Strategy::Priority,
        );
        // the first 5xx goes back to the retry layer; the second trips the breaker and the
        // request moves to b at once
        assert!(send(&p, None).await.is_err());
        assert_eq!(p.snapshot()[0].state, "ok");
        assert!(send(&p, None).await.is_ok());
        assert_eq!(p.snapshot()[0].state, "cooling");
        assert_eq!(c.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cooled_account_gets_one_probe_then_is_back() {
        let calls = Arc::new(AtomicU64::new(0));
        fn throttle_once(n: u64) -> Result<(), Error> {
            if n == 0 {
                throttled(n)
            } else {
                Ok(())
            }
        }
        let p = pool(
            vec![
                fake("a", calls.clone(), throttle_once),
                fake("b", Arc::new(AtomicU64::new(0)), healthy),
            ],
            Strategy::Priority,
        );
        assert!(send(&p, None).await.is_ok());
        assert_eq!(p.snapshot()[0].state, "cooling");
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(p.snapshot()[0].available);
        assert!(send(&p, None).await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(p.snapshot()[0].state, "ok");
    }

    #[tokio::test]
    async fn one_account_is_never_refused_by_the_pool() {
        let c = Arc::new(AtomicU64::new(0));
        let p = AccountPool::single(fake("default", c.clone(), throttled));
        for _ in 0..3 {
            let e = send(&p, None).await.err().unwrap();
            assert!(matches!(e, Error::Status(s) if s.status == 429));
        }
        assert_eq!(c.load(Ordering::SeqCst), 3);
        assert_eq!(p.snapshot()[0].state, "ok");
    }

    #[tokio::test(start_paused = true)]
    async fn an_account_that_stays_silent_is_counted_and_the_retry_goes_elsewhere() {
        use crate::layers::{RetryConfig, RetryLayer};
        use tower_layer::Layer;
        let hung = tower::service_fn(|_r: GenerateRequest| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, Error>(ok())
        });
        let p = AccountPool::new(
            vec![
                Account::new("hung", BoxCloneSyncService::new(hung)),
                fake("b", Arc::new(AtomicU64::new(0)), healthy),
            ],
            PoolConfig {
                strategy: Strategy::Priority,
                failure_threshold: 1,
                ..Default::default()
            },
        )
        .unwrap();
        let svc = RetryLayer::new(RetryConfig {
            first_token_timeout: Duration::from_secs(2),
            ..Default::default()
        })
        .layer(p.clone());
        let r = svc
            .oneshot(GenerateRequest::new(Bytes::from_static(b"{}")))
            .await;
        assert!(r.is_ok());
        let s = p.snapshot();
        assert_eq!(s[0].state, "cooling");
        assert!(
            s[0].last_error.as_deref().unwrap().contains("sent nothing"),
            "{s:?}"
        );
        assert_eq!(s[1].requests, 1);
    }

    #[tokio::test]
    async fn a_single_account_is_parked_for_health_and_back_on_its_next_success() {
        fn quota_once(n: u64) -> Result<(), Error> {
            if n == 0 {
                quota(n)
            } else {
                Ok(())
            }
        }
        let p = AccountPool::single(fake("default", Arc::new(AtomicU64::new(0)), quota_once));
        assert!(send(&p, None).await.is_err());
        assert_eq!(p.snapshot()[0].state, "parked");
        assert!(!p.can_serve(), "/health says so");
        // requests still go to it (there is no other), and an answer ends the parking
        assert!(send(&p, None).await.is_ok());
        assert_eq!(p.snapshot()[0].state, "ok");
        assert!(p.can_serve());
    }

    /// Two gateways (two pools) whose account "a" keeps its health in one shared store: the
    /// throttle the first meets keeps "a" out of the second's rotation too.
    #[tokio::test]
    async fn a_health_store_shared_by_two_pools_keeps_a_throttled_account_out_of_both() {
        use crate::accounts::MemoryHealthStore;
        let shared = Arc::new(MemoryHealthStore::default());
        let calls: Vec<_> = (0..2).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let gateway = |calls: &Arc<AtomicU64>| {
            pool(
                vec![
                    fake("a", calls.clone(), throttled).with_health_store(shared.clone()),
                    fake("b", Arc::new(AtomicU64::new(0)), healthy),
                ],
                Strategy::Priority,
            )
        };
        let (first, second) = (gateway(&calls[0]), gateway(&calls[1]));
        assert!(send(&first, None).await.is_ok());
        assert_eq!(calls[0].load(Ordering::SeqCst), 1);
        assert_eq!(second.snapshot()[0].state, "cooling");
        assert!(send(&second, None).await.is_ok());
        assert_eq!(
            calls[1].load(Ordering::SeqCst),
            0,
            "the second pool never tried the account the first found throttled"
        );
    }

    /// Bindings come from the pool's binding store and every pick with a key is written to
    /// it: a store that binds every conversation to "c" sends them all there, whatever the
    /// strategy would pick.
    #[tokio::test]
    async fn the_pool_follows_and_records_the_bindings_of_its_binding_store() {
        use crate::accounts::BindingStore;
        #[derive(Default)]
        struct AlwaysC {
            bound: std::sync::Mutex<Vec<(u64, String)>>,
        }
        impl BindingStore for AlwaysC {
            fn get(&self, _key: ConversationKey) -> Option<Arc<str>> {
                Some(Arc::from("c"))
            }
            fn bind(&self, key: ConversationKey, account: &Arc<str>) {
                self.bound
                    .lock()
                    .unwrap()
                    .push((key.0, account.to_string()));
            }
        }
        let store = Arc::new(AlwaysC::default());
        let c: Vec<_> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let p = AccountPool::with_bindings(
            ["a", "b", "c"]
                .iter()
                .enumerate()
                .map(|(i, n)| fake(n, c[i].clone(), healthy))
                .collect(),
            PoolConfig {
                strategy: Strategy::RoundRobin,
                ..Default::default()
            },
            store.clone(),
        )
        .unwrap();
        for k in 0..4 {
            assert!(send(&p, Some(k)).await.is_ok());
        }
        let counts: Vec<u64> = c.iter().map(|x| x.load(Ordering::SeqCst)).collect();
        assert_eq!(counts, [0, 0, 4]);
        assert_eq!(
            *store.bound.lock().unwrap(),
            (0..4).map(|k| (k, "c".to_owned())).collect::<Vec<_>>()
        );
    }
}
