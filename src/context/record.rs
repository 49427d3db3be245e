//! [`RequestRecord`]: what the layers of one request learn about it (client, model, account,
//! attempts and retries with their causes, usage, a stream's late failure), read by the
//! metrics layer when the request ends.

use std::sync::{Arc, OnceLock};

use super::usage::UsageReport;

/// The account label until an account pool names the account that served a request.
pub const DEFAULT_ACCOUNT: &str = "default";

/// The client label of a request no client key was checked for (no keys configured) or that
/// presented no valid key.
pub const NO_CLIENT: &str = "none";

/// Why an upstream attempt was retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    /// 429 (or a throttling exception before the first event).
    Throttle,
    /// 5xx (or an internal-error exception before the first event).
    ServerError,
    /// No answer at all: connection refused, reset, DNS, TLS.
    Connect,
    /// A 403 saying the access token is invalid: refreshed and retried once.
    InvalidToken,
    /// Nothing within `FIRST_TOKEN_TIMEOUT`.
    FirstTokenTimeout,
    /// The account failed (throttle, quota, suspension, refused refresh, repeated 5xx) and
    /// the request moved to another one of the pool.
    Failover,
}

impl RetryCause {
    /// Every cause, in the order of [`RetryCause::index`].
    pub const ALL: [RetryCause; 6] = [
        RetryCause::Throttle,
        RetryCause::ServerError,
        RetryCause::Connect,
        RetryCause::InvalidToken,
        RetryCause::FirstTokenTimeout,
        RetryCause::Failover,
    ];

    /// The `cause` label of the retry metric.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryCause::Throttle => "throttle",
            RetryCause::ServerError => "5xx",
            RetryCause::Connect => "connect",
            RetryCause::InvalidToken => "invalid_token",
            RetryCause::FirstTokenTimeout => "first_token_timeout",
            RetryCause::Failover => "failover",
        }
    }

    /// The cause's place in [`RetryCause::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The cause of retrying after `e` (an error the retry policy retries).
    pub fn of(e: &crate::kiro::Error) -> RetryCause {
        use crate::kiro::Failure;
        match e.failure() {
            Failure::Timeout => RetryCause::FirstTokenTimeout,
            Failure::Throttle(_) => RetryCause::Throttle,
            Failure::InvalidToken => RetryCause::InvalidToken,
            Failure::Transient => RetryCause::Connect,
            _ => RetryCause::ServerError,
        }
    }
}

/// What the layers of one request learn about it, for the metrics recorded when it ends.
/// Cheap to clone (one `Arc`); found in the request extensions (and in the
/// [`GenerateRequest`](crate::kiro::GenerateRequest) extensions below the translation).
#[derive(Debug, Clone, Default)]
pub struct RequestRecord(Arc<RecordInner>);

#[derive(Debug, Default)]
struct RecordInner {
    client: OnceLock<Arc<str>>,
    model: OnceLock<String>,
    usage: UsageReport,
    /// Attempts and retries by account, the current (last) account last.
    tallies: std::sync::Mutex<Vec<Tally>>,
    /// The error a streamed answer ended on after its 200 (status, message).
    stream_failure: OnceLock<(u16, String)>,
}

/// The attempts and retries of a request on one account.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// `None`: [`DEFAULT_ACCOUNT`].
    pub account: Option<Arc<str>>,
    /// Calls to the upstream service.
    pub attempts: u32,
    /// Retries, by [`RetryCause::index`].
    pub retries: [u32; RetryCause::ALL.len()],
}

impl Tally {
    /// The account's name ([`DEFAULT_ACCOUNT`] when no pool named one).
    pub fn name(&self) -> &str {
        self.account.as_deref().unwrap_or(DEFAULT_ACCOUNT)
    }
}

impl RequestRecord {
    /// The name of the client key the request presented (never the key).
    pub fn set_client(&self, name: &Arc<str>) {
        let _ = self.0.client.set(name.clone());
    }

    /// The model the request resolved to.
    pub fn set_model(&self, model: &str) {
        let _ = self.0.model.set(model.to_owned());
    }

    /// The account the next attempts go to (an account pool sets it before each; else
    /// [`DEFAULT_ACCOUNT`]). The last one set is the account that served the request.
    pub fn set_account(&self, account: &Arc<str>) {
        let mut t = self.tallies();
        match t.last_mut() {
            Some(last) if last.name() == &**account => {}
            // nothing counted yet under the default name: it was this account all along
            Some(last) if last.account.is_none() && last.attempts == 0 => {
                last.account = Some(account.clone())
            }
            _ => t.push(Tally {
                account: Some(account.clone()),
                ..Default::default()
            }),
        }
    }

    fn tallies(&self) -> std::sync::MutexGuard<'_, Vec<Tally>> {
        crate::lock(&self.0.tallies)
    }

    fn current(t: &mut Vec<Tally>) -> &mut Tally {
        if t.is_empty() {
            t.push(Tally::default());
        }
        let n = t.len() - 1;
        &mut t[n]
    }

    /// The name of the client key the request presented ([`NO_CLIENT`] before a key check).
    pub fn client(&self) -> &str {
        self.0.client.get().map_or(NO_CLIENT, |c| c)
    }

    /// The account the request went to, if it reached one.
    pub fn account_if_any(&self) -> Option<Arc<str>> {
        self.tallies().last().and_then(|t| t.account.clone())
    }

    /// The account that served the request (the last one an attempt went to).
    pub fn account(&self) -> Arc<str> {
        self.tallies()
            .last()
            .and_then(|t| t.account.clone())
            .unwrap_or_else(|| Arc::from(DEFAULT_ACCOUNT))
    }

    /// The Kiro model id the request resolved to (`unknown` before the model layer).
    pub fn model(&self) -> &str {
        self.0.model.get().map_or("unknown", String::as_str)
    }

    /// A streamed answer failed after its response started (kept for the dashboard's
    /// failures; the request is still counted under the status it was answered with).
    pub fn set_stream_failure(&self, status: u16, message: &str) {
        let _ = self.0.stream_failure.set((status, message.to_owned()));
    }

    /// The attempts and retries, by account, in the order the accounts were tried.
    pub fn per_account(&self) -> Vec<Tally> {
        self.tallies().clone()
    }

    /// The failure a streamed answer ended on after its 200, if it did.
    pub fn stream_failure(&self) -> Option<&(u16, String)> {
        self.0.stream_failure.get()
    }

    /// The slot the answer's encoder or folder writes its final usage into.
    pub fn usage(&self) -> &UsageReport {
        &self.0.usage
    }

    /// One call to the upstream service (counted for the current account).
    pub fn attempt(&self) {
        Self::current(&mut self.tallies()).attempts += 1;
    }

    /// One retry, and why (counted for the account the failed attempt went to).
    pub fn retry(&self, cause: RetryCause) {
        Self::current(&mut self.tallies()).retries[cause.index()] += 1;
    }

    /// Attempts in all, over every account.
    pub fn attempts(&self) -> u32 {
        self.tallies().iter().map(|t| t.attempts).sum()
    }

    /// Retries for `cause`, over every account.
    pub fn retries(&self, cause: RetryCause) -> u32 {
        self.tallies()
            .iter()
            .map(|t| t.retries[cause.index()])
            .sum()
    }
}
