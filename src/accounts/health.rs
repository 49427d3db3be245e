//! The health state machine of one account: `ok`, `cooling`, `parked`, `suspended`,
//! `refresh-failing`; what a failed attempt ([`Trip`]) moves it to, when it may be probed
//! (half-open), and when it is back. The state sits behind [`AccountHealthStore`], so that a
//! store shared by several gateways can replace the in-memory one ([`MemoryHealthStore`]).

use std::ops::DerefMut;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::PoolConfig;
use crate::kiro::{Error, Failure};

/// What an account is doing, as `/health/accounts` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountState {
    /// In rotation.
    Ok,
    /// Out for a throttle or repeated failures, until its cool-down ends (then probed).
    Cooling,
    /// Out for a used-up monthly quota, until the quota resets or an admin resets it.
    Parked,
    /// Suspended by the service: out until a restart or an admin reset.
    Suspended,
    /// Its refresh token (or API key) was refused; each probe re-reads its credentials.
    RefreshFailing,
}

impl AccountState {
    /// The name `/health/accounts` and the metrics use.
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
    pub(super) fn duration_from(self, now: SystemTime) -> Duration {
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

/// One account's health record. Opaque outside this module: stores hold it and hand it out
/// ([`AccountHealthStore::lock`]); only the pool's state machine reads and changes it.
#[derive(Debug, Clone)]
pub struct AccountHealth {
    pub(super) state: AccountState,
    /// When a cooling, parked or refresh-failing account may be probed.
    pub(super) until: Option<Instant>,
    pub(super) until_wall: Option<SystemTime>,
    /// Trips in a row (the cool-down doubles with each).
    level: u32,
    /// 5xx / connection failures in a row.
    failures: u32,
    /// A half-open probe is in flight.
    pub(super) probing: bool,
    /// Out for a throttle or a quota (an all-down answer is then a 429, else a 503).
    pub(super) rate_limited: bool,
    /// Out for a used-up quota (an all-down answer of only such accounts is not worth a retry).
    pub(super) quota: bool,
    pub(super) last_error: Option<(SystemTime, String)>,
}

impl Default for AccountHealth {
    fn default() -> Self {
        AccountHealth {
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

impl AccountHealth {
    /// What the account is doing.
    pub fn state(&self) -> AccountState {
        self.state
    }
}

/// Where one account's [`AccountHealth`] lives.
///
/// The in-memory [`MemoryHealthStore`] is the default. A store shared by several gateways
/// (issue 21) must guarantee:
/// - **exclusive guards**: while a guard from [`lock`](Self::lock) is alive, no other `lock`
///   of the same account (in this process or another sharing the store) returns; the pool
///   reads and changes the record under one guard (claiming a probe, counting a failure and
///   tripping the breaker are each one read-modify-write), so without exclusion two gateways
///   could both claim the one half-open probe, or lose a failure count;
/// - **visibility**: what was changed through a guard is what the next `lock` sees, once the
///   guard is dropped (write back on drop);
/// - **no waiting on the holder**: guards are held for a few field updates, never across an
///   `.await`; `lock` may block that long, not longer (a lock with a short lease, not a
///   session);
/// - **a fresh record** ([`AccountHealth::default`], `ok`) for an account it has never seen.
///
/// The record holds [`tokio::time::Instant`]s, which mean nothing in another process: a
/// shared store keeps the wall-clock copies (`until_wall`) and rebuilds the instants.
pub trait AccountHealthStore: Send + Sync {
    /// Exclusive access to the account's record until the guard is dropped.
    fn lock(&self) -> Box<dyn DerefMut<Target = AccountHealth> + '_>;
}

/// One account's health in this process's memory (the default).
#[derive(Debug, Default)]
pub struct MemoryHealthStore {
    health: Mutex<AccountHealth>,
}

impl AccountHealthStore for MemoryHealthStore {
    fn lock(&self) -> Box<dyn DerefMut<Target = AccountHealth> + '_> {
        Box::new(crate::lock(&self.health))
    }
}

/// Whether an account can take a request now.
pub(super) enum Avail {
    Ready,
    /// Its wait is over: the next request is its probe.
    Probe,
    /// Not now; back at this time (`None`: not by itself).
    Down(Option<Instant>),
}

/// Why an attempt failed, as far as the account is concerned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Trip {
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
pub(super) fn classify(e: &Error) -> Trip {
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

impl AccountHealth {
    pub(super) fn avail(&self, now: Instant) -> Avail {
        match (self.state, self.until) {
            (AccountState::Ok, _) => Avail::Ready,
            (AccountState::Suspended, _) => Avail::Down(None),
            (_, Some(t)) if now >= t && !self.probing => Avail::Probe,
            // a probe is out: its answer decides within the first-token timeout
            (_, Some(t)) if now >= t => Avail::Down(Some(now + Duration::from_secs(1))),
            (_, t) => Avail::Down(t),
        }
    }

    /// Take the half-open probe if it is due (two requests may race for it: the guard
    /// decides).
    pub(super) fn claim_probe(&mut self, now: Instant) -> bool {
        let due = matches!(self.avail(now), Avail::Probe);
        if due {
            self.probing = true;
        }
        due
    }

    /// Back in rotation.
    pub(super) fn recover(&mut self, name: &str) {
        tracing::info!(account = %name, was = self.state.as_str(), "account back in rotation");
        self.clear();
    }

    /// `ok`, with no cool-down and no failure counted.
    pub(super) fn clear(&mut self) {
        self.state = AccountState::Ok;
        self.until = None;
        self.until_wall = None;
        self.level = 0;
        self.failures = 0;
    }

    /// The account answered: whatever it was (a probe, a single account's quota or
    /// suspension that has ended), it works now.
    pub(super) fn on_success(&mut self, probe: bool, name: &str) {
        self.failures = 0;
        if probe {
            self.probing = false;
        }
        if self.state != AccountState::Ok {
            self.recover(name);
        }
    }

    /// Record the failed attempt `e` (`probe`: the attempt was the account's probe);
    /// `true`: the request should move to another account (`pooled`: there is one).
    pub(super) fn on_failure(
        &mut self,
        e: &Error,
        probe: bool,
        cfg: &PoolConfig,
        pooled: bool,
        name: &str,
    ) -> bool {
        let trip = classify(e);
        let now = Instant::now();
        let wall = SystemTime::now();
        if probe {
            self.probing = false;
        }
        let cooldown = |level: u32| {
            cfg.cooldown
                .saturating_mul(1u32 << level.min(20))
                .min(cfg.cooldown_max.max(cfg.cooldown))
        };
        let set = |h: &mut AccountHealth,
                   state: AccountState,
                   wait: Option<Duration>,
                   why: String| {
            h.rate_limited = matches!(trip, Trip::Quota | Trip::Throttle(_));
            h.quota = matches!(trip, Trip::Quota);
            h.state = state;
            h.until = wait.map(|w| now + w);
            h.until_wall = wait.map(|w| wall + w);
            h.failures = 0;
            h.last_error = Some((wall, why));
            tracing::warn!(account = %name, state = state.as_str(), wait_secs = wait.map(|w| w.as_secs()), error = %e, "account taken out of rotation");
        };
        match trip {
            Trip::None => {
                // the account answered: whatever was wrong was the request
                if self.state != AccountState::Ok && self.until.is_some_and(|t| now >= t) {
                    self.recover(name);
                }
                false
            }
            Trip::Quota => {
                let wait = cfg.quota_park.duration_from(wall);
                set(
                    self,
                    AccountState::Parked,
                    Some(wait),
                    format!("quota: {e}"),
                );
                pooled
            }
            Trip::Suspended => {
                set(
                    self,
                    AccountState::Suspended,
                    None,
                    format!("suspended: {e}"),
                );
                pooled
            }
            Trip::Refresh => {
                let wait = cooldown(self.level);
                self.level += 1;
                set(
                    self,
                    AccountState::RefreshFailing,
                    Some(wait),
                    format!("refresh refused: {e}"),
                );
                pooled
            }
            Trip::Throttle(hint) if pooled => {
                let wait = cooldown(self.level).max(hint.unwrap_or_default());
                self.level += 1;
                set(
                    self,
                    AccountState::Cooling,
                    Some(wait),
                    format!("throttled: {e}"),
                );
                true
            }
            Trip::Failure if pooled => {
                self.failures += 1;
                self.last_error = Some((wall, format!("failed: {e}")));
                if self.failures >= cfg.failure_threshold.max(1) || self.state != AccountState::Ok {
                    let wait = cooldown(self.level);
                    self.level += 1;
                    set(
                        self,
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
                self.last_error = Some((wall, format!("{e}")));
                false
            }
        }
    }

    /// Why it is down, and when it is tried again, for an all-down answer.
    pub(super) fn down_reason(&self, now: Instant) -> String {
        let when = match self.until {
            Some(t) => format!(
                ", retried in {} s",
                t.saturating_duration_since(now).as_secs().max(1)
            ),
            None => String::new(),
        };
        let why = self
            .last_error
            .as_ref()
            .map(|(_, m)| m.as_str())
            .unwrap_or("unavailable");
        format!("{} ({why}){when}", self.state.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
