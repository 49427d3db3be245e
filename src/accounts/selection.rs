//! Which ready account takes a request: the [`Strategy`] among the accounts that can serve,
//! and the conversation bindings that keep a conversation on its account (stickiness), kept
//! behind [`BindingStore`] so that a store shared by several gateways can replace the
//! in-memory one ([`MemoryBindingStore`]).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::account::Account;
use crate::context::ConversationKey;
use crate::lock;

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

/// The strategy with its round-robin state.
#[derive(Debug)]
pub(super) struct Chooser {
    strategy: Strategy,
    /// Smooth weighted round robin: each account's current weight.
    rr: Mutex<Vec<i64>>,
}

impl Chooser {
    pub(super) fn new(strategy: Strategy, accounts: usize) -> Self {
        Chooser {
            strategy,
            rr: Mutex::new(vec![0; accounts]),
        }
    }

    /// The strategy's pick among `ready` (indices into `accounts`, not empty).
    pub(super) fn choose(&self, accounts: &[Arc<Account>], ready: &[usize]) -> usize {
        match self.strategy {
            Strategy::Priority => *ready
                .iter()
                .min_by_key(|i| (accounts[**i].priority, **i))
                .unwrap_or(&ready[0]),
            Strategy::RoundRobin => self.weighted_rr(accounts, ready),
            Strategy::LeastInFlight => {
                let load = |i: usize| {
                    let a = &accounts[i];
                    a.in_flight.load(Ordering::Relaxed) as u64 * 1_000_000 / u64::from(a.weight)
                };
                let least = ready.iter().map(|i| load(*i)).min().unwrap_or(0);
                let tied: Vec<usize> = ready
                    .iter()
                    .copied()
                    .filter(|i| load(*i) == least)
                    .collect();
                self.weighted_rr(accounts, &tied)
            }
        }
    }

    fn weighted_rr(&self, accounts: &[Arc<Account>], among: &[usize]) -> usize {
        let mut cw = lock(&self.rr);
        let total: i64 = among.iter().map(|i| i64::from(accounts[*i].weight)).sum();
        let mut best = among[0];
        for i in among {
            cw[*i] += i64::from(accounts[*i].weight);
            if cw[*i] > cw[best] {
                best = *i;
            }
        }
        cw[best] -= total;
        best
    }
}

/// Where the pool keeps which account each conversation is bound to (by account name).
///
/// The in-memory [`MemoryBindingStore`] is the default. A store shared by several gateways
/// (issue 21) must guarantee:
/// - **a TTL from the last use**: [`bind`](Self::bind) (called on every request of the
///   conversation) restarts the binding's time to live ([`PoolConfig::sticky_ttl`]); a
///   binding unused for that long is gone (`get` answers `None`), e.g. Redis `SET … EX`;
/// - **last writer wins**: two gateways binding the same conversation at once may each pick
///   an account; whichever `bind` lands last is what `get` answers next (a binding is a
///   hint, never a lock: the pool falls back to its strategy when the bound account cannot
///   serve, or is not one of its accounts);
/// - **bounded size** ([`PoolConfig::sticky_max`]): when full, stale bindings go first;
/// - **no blocking**: both calls sit on the request path, before the upstream call.
///
/// [`PoolConfig::sticky_ttl`]: super::PoolConfig::sticky_ttl
/// [`PoolConfig::sticky_max`]: super::PoolConfig::sticky_max
pub trait BindingStore: Send + Sync {
    /// The account `key` is bound to, if the binding is alive.
    fn get(&self, key: ConversationKey) -> Option<Arc<str>>;
    /// Bind `key` to `account` (or keep it bound), restarting its time to live.
    fn bind(&self, key: ConversationKey, account: &Arc<str>);
}

/// Conversation bindings in this process's memory (the default): forgotten after `ttl`
/// without use; at most `max` (stale ones evicted first, all of them when none is stale).
#[derive(Debug)]
pub struct MemoryBindingStore {
    ttl: Duration,
    max: usize,
    map: Mutex<HashMap<ConversationKey, (Arc<str>, Instant)>>,
}

impl MemoryBindingStore {
    /// Bindings forgotten after `ttl` without use, at most `max` of them.
    pub fn new(ttl: Duration, max: usize) -> Self {
        MemoryBindingStore {
            ttl,
            max,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Bindings held (stale ones not yet evicted included).
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl BindingStore for MemoryBindingStore {
    fn get(&self, key: ConversationKey) -> Option<Arc<str>> {
        let now = Instant::now();
        lock(&self.map)
            .get(&key)
            .filter(|(_, used)| now.saturating_duration_since(*used) < self.ttl)
            .map(|(account, _)| account.clone())
    }

    fn bind(&self, key: ConversationKey, account: &Arc<str>) {
        let now = Instant::now();
        let mut s = lock(&self.map);
        if s.len() >= self.max && !s.contains_key(&key) {
            let ttl = self.ttl;
            s.retain(|_, (_, used)| now.saturating_duration_since(*used) < ttl);
            if s.len() >= self.max {
                s.clear();
            }
        }
        s.insert(key, (account.clone(), now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_binding_is_forgotten_after_its_ttl_without_use_and_kept_while_used() {
        let s = MemoryBindingStore::new(Duration::from_secs(60), 10);
        let a: Arc<str> = Arc::from("a");
        s.bind(ConversationKey(1), &a);
        s.bind(ConversationKey(2), &a);
        tokio::time::advance(Duration::from_secs(40)).await;
        // used again: its TTL starts over
        s.bind(ConversationKey(1), &a);
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!(s.get(ConversationKey(1)).as_deref(), Some("a"));
        assert_eq!(s.get(ConversationKey(2)), None, "80 s without use");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_store_evicts_stale_bindings_first() {
        let s = MemoryBindingStore::new(Duration::from_secs(60), 2);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        s.bind(ConversationKey(1), &a);
        tokio::time::advance(Duration::from_secs(61)).await;
        s.bind(ConversationKey(2), &b);
        s.bind(ConversationKey(3), &b);
        assert_eq!(s.len(), 2, "the stale binding went");
        assert_eq!(s.get(ConversationKey(2)).as_deref(), Some("b"));
        assert_eq!(s.get(ConversationKey(3)).as_deref(), Some("b"));
    }
}
