//! The operator dashboard: one page embedded in the binary (`GET /dashboard`) and the traffic
//! history behind its charts.
//!
//! The page is static (no data, no secret in it): it asks for the admin key, keeps it in the
//! tab's `sessionStorage`, and reads `/health/accounts` and `/admin/stats` with it every five
//! seconds. It is served with a content security policy that allows only its own inline script
//! and style (by hash) and requests to the gateway itself.
//!
//! [`Traffic`] keeps per-minute snapshots of the gateway's own Prometheus counters for the last
//! hour (requests by status class, the time-to-first-byte histogram, credits), taken by
//! [`Traffic::sample_every_minute`] from the rendered `/metrics` text: nothing is recorded on
//! the request path for it. The charts are the differences between snapshots, and the minute
//! in progress is the difference between now and the last snapshot.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::layers::metrics::{names, Metrics};

/// The page.
pub const PAGE: &str = include_str!("dashboard.html");

/// Minutes of history kept.
pub const HISTORY_MINUTES: usize = 60;

/// `Content-Security-Policy` of the page: its inline script and style by hash, nothing else
/// but requests back to the gateway.
pub fn content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let hash = |open: &str, close: &str| {
            use base64::Engine;
            use sha2::{Digest, Sha256};
            let body = PAGE
                .split_once(open)
                .and_then(|(_, rest)| rest.split_once(close))
                .map_or("", |(inner, _)| inner);
            let digest = Sha256::digest(body.as_bytes());
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        };
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash("<script>", "</script>"),
            hash("<style>", "</style>"),
        )
    })
}

/// Cumulative figures read off the metrics at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
struct Totals {
    /// Requests answered 2xx, 4xx, 5xx.
    requests: [f64; 3],
    /// Time-to-first-byte histogram over every route: (upper bound in seconds, cumulative
    /// count), ascending, `+Inf` last.
    ttfb: Vec<(f64, f64)>,
    credits: f64,
}

/// The value of `key="..."` in a label set.
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{key}=\""))? + key.len() + 2;
    let rest = &labels[start..];
    rest.find('"').map(|end| &rest[..end])
}

impl Totals {
    /// From the Prometheus text of [`Metrics::render`].
    fn parse(text: &str) -> Totals {
        let bucket = format!("{}_bucket", names::TTFB);
        let mut t = Totals::default();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            if name == names::REQUESTS {
                let class = label(labels, "status").and_then(|s| s.bytes().next());
                match class {
                    Some(b'2') => t.requests[0] += value,
                    Some(b'4') => t.requests[1] += value,
                    Some(b'5') => t.requests[2] += value,
                    _ => {}
                }
            } else if name == bucket {
                let le = match label(labels, "le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(v) => match v.parse() {
                        Ok(v) => v,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                match t.ttfb.iter_mut().find(|(b, _)| *b == le) {
                    Some((_, c)) => *c += value,
                    None => t.ttfb.push((le, value)),
                }
            } else if name == names::CREDITS {
                t.credits += value;
            }
        }
        t.ttfb.sort_by(|a, b| a.0.total_cmp(&b.0));
        t
    }
}

/// What happened between two snapshots.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    requests: [f64; 3],
    ttfb_p50_ms: Option<f64>,
    ttfb_p95_ms: Option<f64>,
    credits: f64,
}

impl Point {
    fn between(before: &Totals, after: &Totals) -> Point {
        let mut requests = [0.0; 3];
        for (i, r) in requests.iter_mut().enumerate() {
            *r = (after.requests[i] - before.requests[i]).max(0.0);
        }
        let buckets: Vec<(f64, f64)> = after
            .ttfb
            .iter()
            .map(|(le, c)| {
                let was = before
                    .ttfb
                    .iter()
                    .find(|(b, _)| b == le)
                    .map_or(0.0, |(_, c)| *c);
                (*le, (c - was).max(0.0))
            })
            .collect();
        Point {
            requests,
            ttfb_p50_ms: quantile(&buckets, 0.5).map(|s| s * 1000.0),
            ttfb_p95_ms: quantile(&buckets, 0.95).map(|s| s * 1000.0),
            credits: (after.credits - before.credits).max(0.0),
        }
    }
}

/// The `q` quantile of a cumulative histogram, interpolated within its bucket as Prometheus'
/// `histogram_quantile` does (`None`: no observations).
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let span = count - lower.1;
            let within = if span > 0.0 {
                (rank - lower.1) / span
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * within);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

/// The last hour of traffic, in minutes. Cheap to clone.
#[derive(Clone, Default)]
pub struct Traffic {
    snapshots: Arc<Mutex<VecDeque<(SystemTime, Totals)>>>,
}

impl std::fmt::Debug for Traffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Traffic")
    }
}

fn minute_of(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs - secs % 60)
}

impl Traffic {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(SystemTime, Totals)>> {
        crate::lock(&self.snapshots)
    }

    /// Take a snapshot now.
    pub fn sample(&self, metrics: &Metrics) {
        let totals = Totals::parse(&metrics.render());
        let mut s = self.lock();
        s.push_back((SystemTime::now(), totals));
        while s.len() > HISTORY_MINUTES + 1 {
            s.pop_front();
        }
    }

    /// A snapshot now and then at every minute boundary, until `cancel` fires.
    pub async fn sample_every_minute(
        self,
        metrics: Metrics,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        loop {
            self.sample(&metrics);
            let now = SystemTime::now();
            let next = minute_of(now) + Duration::from_secs(60);
            let wait = next.duration_since(now).unwrap_or(Duration::from_secs(60));
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The per-minute series for the charts: one point per minute between snapshots, then the
    /// minute in progress (now against the last snapshot; against zero before the first).
    pub fn series(&self, metrics: &Metrics) -> Value {
        let now = Totals::parse(&metrics.render());
        let snaps = self.lock().clone();
        let mut minutes = Vec::new();
        let mut points = Vec::new();
        for pair in snaps.iter().collect::<Vec<_>>().windows(2) {
            minutes.push(minute_of(pair[0].0));
            points.push(Point::between(&pair[0].1, &pair[1].1));
        }
        let (since, base) = match snaps.back() {
            Some((t, b)) => (*t, b.clone()),
            None => (SystemTime::now(), Totals::default()),
        };
        minutes.push(minute_of(since));
        points.push(Point::between(&base, &now));
        let col = |f: &dyn Fn(&Point) -> Value| points.iter().map(f).collect::<Vec<_>>();
        json!({
            "minutes": minutes.into_iter().map(crate::auth::source::format_expiry).collect::<Vec<_>>(),
            "requests": {
                "2xx": col(&|p| json!(p.requests[0])),
                "4xx": col(&|p| json!(p.requests[1])),
                "5xx": col(&|p| json!(p.requests[2])),
            },
            "ttfb_p50_ms": col(&|p| json!(p.ttfb_p50_ms.map(|v| (v * 10.0).round() / 10.0))),
            "ttfb_p95_ms": col(&|p| json!(p.ttfb_p95_ms.map(|v| (v * 10.0).round() / 10.0))),
            "credits": col(&|p| json!((p.credits * 1e6).round() / 1e6)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE kiro_gateway_requests_total counter
kiro_gateway_requests_total{route="/v1/chat/completions",dialect="openai",model="m",status="200",account="a",client="c"} 7
kiro_gateway_requests_total{route="/v1/messages",dialect="anthropic",model="m",status="200",account="b",client="c"} 3
kiro_gateway_requests_total{route="/v1/messages",dialect="anthropic",model="m",status="429",account="b",client="c"} 2
kiro_gateway_requests_total{route="/v1/messages",dialect="anthropic",model="m",status="503",account="b",client="c"} 1
kiro_gateway_time_to_first_byte_seconds_bucket{route="/v1/chat/completions",dialect="openai",le="0.1"} 4
kiro_gateway_time_to_first_byte_seconds_bucket{route="/v1/chat/completions",dialect="openai",le="0.5"} 9
kiro_gateway_time_to_first_byte_seconds_bucket{route="/v1/chat/completions",dialect="openai",le="+Inf"} 10
kiro_gateway_time_to_first_byte_seconds_bucket{route="/v1/messages",dialect="anthropic",le="0.1"} 0
kiro_gateway_time_to_first_byte_seconds_bucket{route="/v1/messages",dialect="anthropic",le="0.5"} 0
kiro_gateway_time_to_first_byte_seconds_bucket{route="/v1/messages",dialect="anthropic",le="+Inf"} 0
kiro_gateway_credits{account="a",model="m"} 0.25
kiro_gateway_credits{account="b",model="m"} 0.5
"#;

    #[test]
    fn totals_are_read_off_the_metrics_text() {
        let t = Totals::parse(TEXT);
        assert_eq!(t.requests, [10.0, 2.0, 1.0]);
        assert_eq!(t.ttfb, vec![(0.1, 4.0), (0.5, 9.0), (f64::INFINITY, 10.0)]);
        assert!((t.credits - 0.75).abs() < 1e-9);
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let b = [(0.1, 4.0), (0.5, 9.0), (f64::INFINITY, 10.0)];
        // rank 5 of 10: one of the five observations in (0.1, 0.5]
        assert!((quantile(&b, 0.5).unwrap() - 0.18).abs() < 1e-9);
        // rank 9.5 falls in +Inf: the largest finite bound
        assert_eq!(quantile(&b, 0.95), Some(0.5));
        assert_eq!(quantile(&[(0.1, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
    }

    #[test]
    fn a_point_is_the_difference_between_two_snapshots() {
        let before = Totals {
            requests: [4.0, 0.0, 1.0],
            ttfb: vec![(0.1, 4.0), (0.5, 4.0), (f64::INFINITY, 4.0)],
            credits: 0.25,
        };
        let p = Point::between(&before, &Totals::parse(TEXT));
        assert_eq!(p.requests, [6.0, 2.0, 0.0]);
        // the six new observations: five in (0.1, 0.5], one above
        assert!(p.ttfb_p50_ms.unwrap() > 100.0 && p.ttfb_p50_ms.unwrap() < 500.0);
        assert!((p.credits - 0.5).abs() < 1e-9);
    }

    #[test]
    fn the_page_has_a_policy_for_its_own_script_and_style_only() {
        let csp = content_security_policy();
        assert!(csp.contains("script-src 'sha256-"));
        assert!(csp.contains("style-src 'sha256-"));
        assert!(!csp.contains("unsafe"));
        // no inline style attributes or handlers, which the policy would block
        assert!(!PAGE.contains(" style=\""));
        assert!(!PAGE.contains(" onclick="));
        assert_eq!(PAGE.matches("<script").count(), 1);
    }
}
