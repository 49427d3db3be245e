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
//! When no account can serve, the request fails with [`Error::NoAccount`](crate::kiro::Error::NoAccount): a 429 when every
//! account is down for a throttle or a quota, else a 503, with the earliest time one comes
//! back as `Retry-After`.
//!
//! With a single account there is nowhere to fail over to: every request goes to it and the
//! retry layer's backoff alone governs throttles and 5xx (no cooling); quota, suspension and
//! refused refreshes are still tracked, for `/health` and `/health/accounts`.
//!
//! **Layout.** [`pool`] is the service and its failover; [`health`] the state machine above
//! (each account's record behind an [`AccountHealthStore`]); [`selection`] the strategy and
//! the conversation bindings (behind a [`BindingStore`]); [`account`] one account and its
//! snapshot. The two stores are seams for state shared by several gateways: the in-memory
//! ones are the default, and a shared one replaces them without touching the layers.

pub mod account;
pub mod health;
pub mod pool;
pub mod selection;

use std::time::Duration;

pub use account::{Account, AccountService, AccountSnapshot};
pub use health::{AccountHealth, AccountHealthStore, AccountState, MemoryHealthStore, QuotaPark};
pub use pool::AccountPool;
pub use selection::{BindingStore, MemoryBindingStore, Strategy};

pub use crate::context::ConversationKey;
pub use crate::kiro::KiroBody;

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// How an account is picked among those that can serve (`ACCOUNT_SELECTION`).
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
