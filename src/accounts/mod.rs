//! Several Kiro accounts behind one gateway: which account serves a request, what happens when
//! one fails, and what each is doing.
//!
//! [`AccountPool`] is the service at the bottom of every chat stack (below the
//! [`RetryLayer`](crate::layers::RetryLayer)); each [`Account`] has its own upstream service
//! (its [`KiroAuthLayer`](crate::layers::KiroAuthLayer) over its own
//! [`KiroClient`](crate::kiro::KiroClient)), hence its own token manager, refresh single-flight
//! and write-back.
//!
//! **Selection.** Among the accounts that can serve, [`Strategy`] picks: `priority` (the lowest
//! `priority` value, then configuration order), `round_robin` (smooth weighted round robin by
//! `weight`), `least_in_flight` (the default: fewest open requests per unit of weight, ties by
//! weighted round robin).
//!
//! **Stickiness.** A conversation keeps its account while that account can serve, so the
//! service-side context and any prompt caching stay in one place. The key
//! ([`ConversationKey`]) is, in this order: the client's session header
//! (`x-session-id`, `x-claude-code-session-id`, Codex's `session_id`), else a hash of the
//! system prompt and the first user message (which every later turn of the same conversation
//! repeats); either way with the client key's name. Bindings are forgotten after
//! [`PoolConfig::sticky_ttl`] without use.
//!
//! **Failover and circuit breaking.** Before any event has reached the layers above (the pool
//! looks at the first event itself), an attempt that meets a used-up monthly quota, a throttle,
//! a suspension, a refused token refresh, or the [`PoolConfig::failure_threshold`]th 5xx or
//! connection failure in a row goes to the next account that can serve, at once. The failing
//! account then:
//! - **cools** (throttle, repeated 5xx): unavailable for [`PoolConfig::cooldown`], doubling with
//!   each trip up to [`PoolConfig::cooldown_max`] (a longer retry hint from the service wins);
//!   afterwards one request is let through as a probe (half-open): success makes it `ok`
//!   again, failure cools it for the next, longer period;
//! - is **refresh-failing** (the auth service refused its refresh token, or its API key was
//!   refused): cools the same way; each probe re-reads its credentials;
//! - is **parked** (monthly quota): until [`QuotaPark`] (the start of the next month, UTC, by
//!   default) or an admin reset, then probed;
//! - is **suspended**: until the gateway restarts or an admin resets it.
//!
//! When no account can serve, the request fails with [`Error::NoAccount`]: a 429 when every
//! account is down for a throttle or a quota, else a 503, with the earliest time one comes
//! back as `Retry-After`.
//!
//! With a single account there is nowhere to fail over to: every request goes to it and the
//! retry layer's backoff alone governs throttles and 5xx (no cooling); quota, suspension and
//! refused refreshes are still tracked, for `/health` and `/health/accounts`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;
use tower_service::Service;

use crate::auth::TokenManager;
use crate::context::{CaptureHandle, FirstTokenDeadline, RequestRecord, RetryCause};
use crate::kiro::{Error, Event, GenerateRequest, GenerateResponse, KiroClient};
use crate::lock;

/// The upstream service of one account.
pub type AccountService = BoxCloneSyncService<GenerateRequest, GenerateResponse, Error>;

/// How the pool picks among the accounts that can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// The lowest `priority`, then configuration order.
    Priority,
    /// Smooth weighted round robin.
    RoundRobin,
    /// Fewest requests in flight per unit of weight.
    #[default]
    LeastInFlight,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "priority" => Ok(Strategy::Priority),
            "round_robin" | "roundrobin" => Ok(Strategy::RoundRobin),
            "least_in_flight" | "" => Ok(Strategy::LeastInFlight),
            other => Err(format!(
                "{other:?} is not priority, round_robin or least_in_flight"
            )),
        }
    }
}

/// How long an account that used up its monthly quota stays parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaPark {
    /// Until 00:00 UTC on the first day of the next month (Kiro's quotas are monthly; the
    /// exact reset moment of a plan is not published: spec (assumed)).
    NextMonth,
    /// For a fixed time.
    For(Duration),
}

impl std::str::FromStr for QuotaPark {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("monthly") || t.is_empty() {
            return Ok(QuotaPark::NextMonth);
        }
        match t.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(QuotaPark::For(Duration::from_secs_f64(v))),
            _ => Err(format!("{t:?} is not \"monthly\" or a number of seconds")),
        }
    }
}

impl QuotaPark {
    /// How long from `now` (wall clock).
    fn duration_from(self, now: SystemTime) -> Duration {
        match self {
            QuotaPark::For(d) => d,
            QuotaPark::NextMonth => {
                let now_odt = time::OffsetDateTime::from(now);
                let (y, m) = match now_odt.month() {
                    time::Month::December => (now_odt.year() + 1, time::Month::January),
                    m => (now_odt.year(), m.next()),
                };
                let next = time::Date::from_calendar_date(y, m, 1)
                    .map(|d| d.midnight().assume_utc())
                    .unwrap_or(now_odt + time::Duration::days(31));
                let secs = (next - now_odt).whole_seconds().max(60);
                Duration::from_secs(secs as u64)
            }
        }
    }
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub strategy: Strategy,
    /// First cool-down of an account (`ACCOUNT_COOLDOWN_SECS`); doubles with each trip.
    pub cooldown: Duration,
    /// Longest cool-down (`ACCOUNT_COOLDOWN_MAX_SECS`).
    pub cooldown_max: Duration,
    /// 5xx or connection failures in a row that cool an account (`ACCOUNT_FAILURE_THRESHOLD`).
    pub failure_threshold: u32,
    /// How long a quota-exhausted account stays parked (`ACCOUNT_QUOTA_PARK`).
    pub quota_park: QuotaPark,
    /// A conversation binding unused this long is forgotten (`STICKY_TTL_SECS`).
    pub sticky_ttl: Duration,
    /// At most this many conversation bindings are kept.
    pub sticky_max: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            strategy: Strategy::LeastInFlight,
            cooldown: Duration::from_secs(30),
            cooldown_max: Duration::from_secs(900),
            failure_threshold: 2,
            quota_park: QuotaPark::NextMonth,
            sticky_ttl: Duration::from_secs(3600),
            sticky_max: 10_000,
        }
    }
}

pub use crate::context::ConversationKey;

pub use crate::kiro::KiroBody;

/// What an account is doing, as `/health/accounts` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountState {
    Ok,
    Cooling,
    Parked,
    Suspended,
    RefreshFailing,
}

impl AccountState {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Ok => "ok",
            AccountState::Cooling => "cooling",
            AccountState::Parked => "parked",
            AccountState::Suspended => "suspended",
            AccountState::RefreshFailing => "refresh-failing",
        }
    }
}

#[derive(Debug)]
struct Health {
    state: AccountState,
    /// When a cooling, parked or refresh-failing account may be probed.
    until: Option<Instant>,
    until_wall: Option<SystemTime>,
    /// Trips in a row (the cool-down doubles with each).
    level: u32,
    /// 5xx / connection failures in a row.
    failures: u32,
    /// A half-open probe is in flight.
    probing: bool,
    /// Out for a throttle or a quota (an all-down answer is then a 429, else a 503).
    rate_limited: bool,
    /// Out for a used-up quota (an all-down answer of only such accounts is not worth a retry).
    quota: bool,
    last_error: Option<(SystemTime, String)>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: AccountState::Ok,
            until: None,
            until_wall: None,
            level: 0,
            failures: 0,
            probing: false,
            rate_limited: false,
            quota: false,
            last_error: None,
        }
    }
}

enum Avail {
    Ready,
    /// Its wait is over: the next request is its probe.
    Probe,
    /// Not now; back at this time (`None`: not by itself).
    Down(Option<Instant>),
}

impl Health {
    fn avail(&self, now: Instant) -> Avail {
        match (self.state, self.until) {
            (AccountState::Ok, _) => Avail::Ready,
            (AccountState::Suspended, _) => Avail::Down(None),
            (_, Some(t)) if now >= t && !self.probing => Avail::Probe,
            // a probe is out: its answer decides within the first-token timeout
            (_, Some(t)) if now >= t => Avail::Down(Some(now + Duration::from_secs(1))),
            (_, t) => Avail::Down(t),
        }
    }
}

/// One Kiro account of the pool.
pub struct Account {
    name: Arc<str>,
    priority: i32,
    weight: u32,
    tokens: Option<TokenManager>,
    client: Option<KiroClient>,
    /// `origin` its protocol puts into every message.
    origin: &'static str,
    service: AccountService,
    health: Mutex<Health>,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    errors: AtomicU64,
    /// Credits metered on its answers, in millionths.
    micro_credits: AtomicU64,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("priority", &self.priority)
            .field("weight", &self.weight)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// An account served by any upstream service (a fake in tests and benches).
    pub fn new(name: impl Into<Arc<str>>, service: AccountService) -> Self {
        Account {
            name: name.into(),
            priority: 0,
            weight: 1,
            tokens: None,
            client: None,
            origin: "AI_EDITOR",
            service,
            health: Mutex::new(Health::default()),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            micro_credits: AtomicU64::new(0),
        }
    }

    /// A real Kiro account: its token manager's auth layer over its client.
    pub fn kiro(name: impl Into<Arc<str>>, tokens: TokenManager, client: KiroClient) -> Self {
        use tower_layer::Layer;
        let service = BoxCloneSyncService::new(
            crate::layers::KiroAuthLayer::new(tokens.clone()).layer(client.clone()),
        );
        let origin = client.body_requirements().origin;
        let mut a = Account::new(name, service);
        a.origin = origin;
        a.tokens = Some(tokens);
        a.client = Some(client);
        a
    }

    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Share of the traffic relative to the others (at least 1).
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tokens(&self) -> Option<&TokenManager> {
        self.tokens.as_ref()
    }

    pub fn client(&self) -> Option<&KiroClient> {
        self.client.as_ref()
    }

    pub fn state(&self) -> AccountState {
        let state = lock(&self.health).state;
        if state == AccountState::Ok && self.refresh_problem().is_some() {
            return AccountState::RefreshFailing;
        }
        state
    }

    /// Why its token manager cannot give it a usable token (see
    /// [`TokenManager::refresh_problem`]).
    fn refresh_problem(&self) -> Option<String> {
        self.tokens.as_ref().and_then(TokenManager::refresh_problem)
    }

    /// Whether a request now could be served by it: not out of rotation, and not without a
    /// usable token because its refresh fails (a due probe does not make such an account
    /// available: it would fail the request it is tried with).
    fn available(&self, now: Instant) -> bool {
        !matches!(lock(&self.health).avail(now), Avail::Down(_)) && self.refresh_problem().is_none()
    }

    fn profile_arn(&self) -> Option<String> {
        self.tokens
            .as_ref()
            .and_then(TokenManager::profile_arn_for_requests)
    }
}

/// One account's figures and state, for `/health/accounts` (no secrets).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccountSnapshot {
    pub name: String,
    pub state: &'static str,
    /// Whether a request now could go to it.
    pub available: bool,
    pub auth_type: Option<&'static str>,
    pub source: Option<&'static str>,
    pub protocol: Option<&'static str>,
    pub region: Option<String>,
    pub token_expires_at: Option<String>,
    pub token_expires_in_secs: Option<u64>,
    /// When a cooling, parked or refresh-failing account is next tried (RFC 3339).
    pub retry_at: Option<String>,
    pub retry_in_secs: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// Why the account has no usable token: its last refresh failed and its access token has
    /// expired (the failure, naming the credential source). The account is then not
    /// available, and `/health` counts it so.
    pub refresh_error: Option<String>,
    pub priority: i32,
    pub weight: u32,
    pub in_flight: usize,
    /// Upstream attempts sent to it since start.
    pub requests: u64,
    /// Attempts that failed.
    pub errors: u64,
    /// Credits metered on its answers since start.
    pub credits: f64,
    pub token_refreshes: u64,
    pub token_refresh_failures: u64,
}

impl<'a> From<&'a AccountSnapshot> for crate::layers::metrics::AccountGauge<'a> {
    fn from(a: &'a AccountSnapshot) -> Self {
        crate::layers::metrics::AccountGauge {
            name: &a.name,
            state: a.state,
            available: a.available,
            token_refreshes: a.token_refreshes,
            token_refresh_failures: a.token_refresh_failures,
        }
    }
}

struct PoolInner {
    accounts: Vec<Arc<Account>>,
    cfg: PoolConfig,
    /// Conversation → account index, last use.
    sticky: Mutex<HashMap<ConversationKey, (usize, Instant)>>,
    /// Smooth weighted round robin: each account's current weight.
    rr: Mutex<Vec<i64>>,
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

/// Why an attempt failed, as far as the account is concerned.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Trip {
    Quota,
    Suspended,
    Throttle(Option<Duration>),
    Refresh,
    /// 5xx, connection failure, a refresh that failed in transit.
    Failure,
    /// The request's own problem (400, …): says nothing about the account.
    None,
}

/// What a failure holds against the account, from the one classifier of upstream failures.
fn classify(e: &Error) -> Trip {
    use crate::kiro::Failure;
    match e.failure() {
        Failure::Quota => Trip::Quota,
        Failure::Suspended => Trip::Suspended,
        Failure::Throttle(hint) => Trip::Throttle(hint),
        Failure::Credentials => Trip::Refresh,
        Failure::Unavailable | Failure::Timeout | Failure::Transient => Trip::Failure,
        Failure::InvalidToken | Failure::Broken | Failure::NoAccount | Failure::Client => {
            Trip::None
        }
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
            lock(&self.account.health).probing = false;
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
    /// needs an order.
    pub fn new(accounts: Vec<Account>, cfg: PoolConfig) -> Result<Self, String> {
        if accounts.is_empty() {
            return Err("an account pool needs at least one account".into());
        }
        let mut seen = std::collections::HashSet::new();
        for a in &accounts {
            if !seen.insert(a.name.clone()) {
                return Err(format!("the account name {:?} is used twice", a.name));
            }
        }
        Ok(Self::build(accounts, cfg))
    }

    fn build(accounts: Vec<Account>, cfg: PoolConfig) -> Self {
        let n = accounts.len();
        AccountPool {
            inner: Arc::new(PoolInner {
                accounts: accounts.into_iter().map(Arc::new).collect(),
                cfg,
                sticky: Mutex::new(HashMap::new()),
                rr: Mutex::new(vec![0; n]),
            }),
        }
    }

    /// A pool of one account (the single-account form).
    pub fn single(account: Account) -> Self {
        Self::build(vec![account], PoolConfig::default())
    }

    pub fn accounts(&self) -> &[Arc<Account>] {
        &self.inner.accounts
    }

    /// The first account (the one model lists and `/health`'s auth block come from).
    pub fn primary(&self) -> &Arc<Account> {
        &self.inner.accounts[0]
    }

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
                let mut h = lock(&a.health);
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
                    let mut h = lock(&a.health);
                    h.probing &= !lease.probe;
                    lease.probe = false;
                    if h.state != AccountState::Ok {
                        recover(&mut h, &a.name);
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
        let mut h = lock(&a.health);
        let was = h.state;
        h.state = AccountState::Ok;
        h.until = None;
        h.until_wall = None;
        h.level = 0;
        h.failures = 0;
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
                let h = lock(&a.health);
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
            match lock(&a.health).avail(now) {
                Avail::Ready => ready.push(i),
                Avail::Probe => probes.push(i),
                Avail::Down(_) => {}
            }
        }
        let sticky = key.and_then(|k| lock(&p.sticky).get(&k).map(|(i, _)| *i));
        // a probe is claimed under the account's lock (two requests may race for it)
        let claim = |i: usize| {
            let mut h = lock(&p.accounts[i].health);
            let due = matches!(h.avail(now), Avail::Probe);
            if due {
                h.probing = true;
            }
            due
        };
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
            choice = Some((self.choose(&ready), false));
        }
        let Some((i, probe)) = choice else {
            return Err(self.all_down(now));
        };
        if let Some(k) = key {
            let mut s = lock(&p.sticky);
            if s.len() >= p.cfg.sticky_max && !s.contains_key(&k) {
                let ttl = p.cfg.sticky_ttl;
                s.retain(|_, (_, used)| now.saturating_duration_since(*used) < ttl);
                if s.len() >= p.cfg.sticky_max {
                    s.clear();
                }
            }
            s.insert(k, (i, now));
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
            let h = lock(&a.health);
            match h.avail(now) {
                Avail::Down(t) => {
                    if let Some(t) = t {
                        earliest = Some(earliest.map_or(t, |e| e.min(t)));
                    }
                    rate_limited &= h.rate_limited;
                    quota_exhausted &= h.quota;
                    reasons.push(format!("{}: {}", a.name, down_reason(&h, now)));
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

    /// The strategy's pick among `ready` (not empty).
    fn choose(&self, ready: &[usize]) -> usize {
        let p = &*self.inner;
        match p.cfg.strategy {
            Strategy::Priority => *ready
                .iter()
                .min_by_key(|i| (p.accounts[**i].priority, **i))
                .unwrap_or(&ready[0]),
            Strategy::RoundRobin => self.weighted_rr(ready),
            Strategy::LeastInFlight => {
                let load = |i: usize| {
                    let a = &p.accounts[i];
                    a.in_flight.load(Ordering::Relaxed) as u64 * 1_000_000 / u64::from(a.weight)
                };
                let least = ready.iter().map(|i| load(*i)).min().unwrap_or(0);
                let tied: Vec<usize> = ready
                    .iter()
                    .copied()
                    .filter(|i| load(*i) == least)
                    .collect();
                self.weighted_rr(&tied)
            }
        }
    }

    fn weighted_rr(&self, among: &[usize]) -> usize {
        let p = &*self.inner;
        let mut cw = lock(&p.rr);
        let total: i64 = among.iter().map(|i| i64::from(p.accounts[*i].weight)).sum();
        let mut best = among[0];
        for i in among {
            cw[*i] += i64::from(p.accounts[*i].weight);
            if cw[*i] > cw[best] {
                best = *i;
            }
        }
        cw[best] -= total;
        best
    }

    /// Record a failed attempt; `true`: the request should move to another account.
    fn judge(&self, lease: &mut Lease, e: &Error) -> bool {
        let pooled = self.is_pooled();
        let a = &lease.account;
        a.errors.fetch_add(1, Ordering::Relaxed);
        let trip = classify(e);
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut h = lock(&a.health);
        if lease.probe {
            h.probing = false;
            lease.probe = false;
        }
        let cfg = &self.inner.cfg;
        let cooldown = |level: u32| {
            cfg.cooldown
                .saturating_mul(1u32 << level.min(20))
                .min(cfg.cooldown_max.max(cfg.cooldown))
        };
        let set = |h: &mut Health, state: AccountState, wait: Option<Duration>, why: String| {
            h.rate_limited = matches!(trip, Trip::Quota | Trip::Throttle(_));
            h.quota = matches!(trip, Trip::Quota);
            h.state = state;
            h.until = wait.map(|w| now + w);
            h.until_wall = wait.map(|w| wall + w);
            h.failures = 0;
            h.last_error = Some((wall, why));
            tracing::warn!(account = %a.name, state = state.as_str(), wait_secs = wait.map(|w| w.as_secs()), error = %e, "account taken out of rotation");
        };
        match trip {
            Trip::None => {
                // the account answered: whatever was wrong was the request
                if h.state != AccountState::Ok && h.until.is_some_and(|t| now >= t) {
                    recover(&mut h, &a.name);
                }
                false
            }
            Trip::Quota => {
                let wait = cfg.quota_park.duration_from(wall);
                set(
                    &mut h,
                    AccountState::Parked,
                    Some(wait),
                    format!("quota: {e}"),
                );
                pooled
            }
            Trip::Suspended => {
                set(
                    &mut h,
                    AccountState::Suspended,
                    None,
                    format!("suspended: {e}"),
                );
                pooled
            }
            Trip::Refresh => {
                let wait = cooldown(h.level);
                h.level += 1;
                set(
                    &mut h,
                    AccountState::RefreshFailing,
                    Some(wait),
                    format!("refresh refused: {e}"),
                );
                pooled
            }
            Trip::Throttle(hint) if pooled => {
                let wait = cooldown(h.level).max(hint.unwrap_or_default());
                h.level += 1;
                set(
                    &mut h,
                    AccountState::Cooling,
                    Some(wait),
                    format!("throttled: {e}"),
                );
                true
            }
            Trip::Failure if pooled => {
                h.failures += 1;
                h.last_error = Some((wall, format!("failed: {e}")));
                if h.failures >= cfg.failure_threshold.max(1) || h.state != AccountState::Ok {
                    let wait = cooldown(h.level);
                    h.level += 1;
                    set(
                        &mut h,
                        AccountState::Cooling,
                        Some(wait),
                        format!("failing: {e}"),
                    );
                    true
                } else {
                    false
                }
            }
            Trip::Throttle(_) | Trip::Failure => {
                h.last_error = Some((wall, format!("{e}")));
                false
            }
        }
    }
}

fn recover(h: &mut Health, name: &str) {
    tracing::info!(account = %name, was = h.state.as_str(), "account back in rotation");
    h.state = AccountState::Ok;
    h.until = None;
    h.until_wall = None;
    h.level = 0;
    h.failures = 0;
}

fn down_reason(h: &Health, now: Instant) -> String {
    let when = match h.until {
        Some(t) => format!(
            ", retried in {} s",
            t.saturating_duration_since(now).as_secs().max(1)
        ),
        None => String::new(),
    };
    let why = h
        .last_error
        .as_ref()
        .map(|(_, m)| m.as_str())
        .unwrap_or("unavailable");
    format!("{} ({why}){when}", h.state.as_str())
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
                        {
                            // it answered: whatever it was (a probe, a single account's
                            // quota or suspension that has ended), it works now
                            let mut h = lock(&account.health);
                            h.failures = 0;
                            if lease.probe {
                                h.probing = false;
                            }
                            if h.state != AccountState::Ok {
                                recover(&mut h, &account.name);
                            }
                        }
                        lease.probe = false;
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
    use crate::kiro::UpstreamStatus;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

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
        assert_eq!(g.code().as_deref(), Some("all_accounts_rate_limited"));
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

    #[test]
    fn quota_parks_until_the_first_of_next_month() {
        // 2026-12-15 12:00 UTC → 2027-01-01 00:00 UTC
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_797_336_000);
        let d = QuotaPark::NextMonth.duration_from(t);
        assert_eq!(
            crate::auth::source::format_expiry(t + d),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(
            "600".parse::<QuotaPark>().unwrap(),
            QuotaPark::For(Duration::from_secs(600))
        );
    }
}
