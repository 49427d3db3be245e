//! The tasks a running gateway needs besides answering requests, started together by
//! [`Gateway::start_background`] and stopped together by its shutdown token, so an app that
//! mounts [`Gateway::router`] in its own server starts them with one call:
//!
//! - `model-catalogue`: the model list fetched at once when the catalogue is not fresh, then
//!   again every `MODEL_CACHE_TTL_SECS` ([`Gateway::refresh_models_periodically`]);
//! - `account-tokens`: every account but the first gets a token once, so a bad credential
//!   shows in the log at startup rather than at its first request (the first account's token
//!   is fetched by the catalogue refresh);
//! - `metrics-upkeep`: histogram samples folded into buckets every 5 s, when nothing scrapes
//!   `/metrics` ([`Metrics::upkeep_every`](crate::layers::Metrics::upkeep_every));
//! - `traffic-samples`: the per-minute history behind the dashboard's charts
//!   ([`Traffic::sample_every_minute`](crate::dashboard::Traffic::sample_every_minute)).

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Gateway;

/// How often the metrics' histogram samples are folded when nothing scrapes them.
const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// How long the startup check waits for one account's token.
const ACCOUNT_CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// The running background tasks of a gateway (see the module docs). Each task ends when the
/// shutdown token given to [`Gateway::start_background`] is cancelled (`account-tokens` also
/// ends by itself once every account was tried); [`Background::join`] waits for them.
/// Dropping this detaches the tasks, it does not stop them: the token does.
#[derive(Debug)]
pub struct Background {
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Background {
    /// The tasks' names, in start order.
    pub fn names(&self) -> Vec<&'static str> {
        self.tasks.iter().map(|(n, _)| *n).collect()
    }

    /// The tasks' handles, by name.
    pub fn into_handles(self) -> Vec<(&'static str, JoinHandle<()>)> {
        self.tasks
    }

    /// Wait until every task has ended (cancel the shutdown token first). A task that
    /// panicked is logged, not propagated.
    pub async fn join(self) {
        for (name, task) in self.tasks {
            if let Err(e) = task.await {
                tracing::warn!(task = name, error = %e, "a background task failed");
            }
        }
    }
}

impl Gateway {
    /// Start every background task of the gateway on the current tokio runtime (call it from
    /// inside one); they run until `shutdown` is cancelled. The bundled server calls it once
    /// before serving; an app that mounts [`Gateway::router`] calls it the same way.
    pub fn start_background(&self, shutdown: &CancellationToken) -> Background {
        let tasks = vec![
            (
                "model-catalogue",
                tokio::spawn(self.clone().refresh_models_periodically(shutdown.clone())),
            ),
            (
                "account-tokens",
                tokio::spawn(self.clone().check_account_tokens(shutdown.clone())),
            ),
            (
                "metrics-upkeep",
                tokio::spawn(
                    self.metrics
                        .clone()
                        .upkeep_every(METRICS_UPKEEP_EVERY, shutdown.clone()),
                ),
            ),
            (
                "traffic-samples",
                tokio::spawn(
                    self.traffic
                        .clone()
                        .sample_every_minute(self.metrics.clone(), shutdown.clone()),
                ),
            ),
        ];
        Background { tasks }
    }

    /// Keep the model catalogue fresh until `cancel` fires: fetched at once unless the list
    /// is younger than the TTL (the bundled server loads it before it listens), then every
    /// TTL. A failed fetch keeps the current list and is tried again a TTL later.
    pub async fn refresh_models_periodically(self, cancel: CancellationToken) {
        let ttl = self.parts.catalog.ttl();
        let mut wait = match self.parts.catalog.age() {
            Some(age) if age < ttl => ttl - age,
            _ => Duration::ZERO,
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let refreshed = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.refresh_models() => r,
            };
            match refreshed {
                Ok(n) => tracing::debug!(models = n, "model catalogue refreshed"),
                Err(e) => {
                    tracing::warn!(error = %e, "model catalogue refresh failed; keeping the current list")
                }
            }
            wait = ttl;
        }
    }

    /// Get a token for every account but the first, once, logging the outcome.
    async fn check_account_tokens(self, cancel: CancellationToken) {
        for account in self.parts.accounts.accounts().iter().skip(1) {
            let Some(tokens) = account.tokens() else {
                continue;
            };
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return,
                r = tokio::time::timeout(ACCOUNT_CHECK_TIMEOUT, tokens.access_token()) => r,
            };
            match outcome {
                Ok(Ok(_)) => tracing::info!(account = account.name(), "account ready"),
                Ok(Err(e)) => {
                    tracing::warn!(account = account.name(), error = %e, "account cannot get a token; it is tried again on use")
                }
                Err(_) => tracing::warn!(
                    account = account.name(),
                    "account token timed out; it is tried again on use"
                ),
            }
        }
    }
}
