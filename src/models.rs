//! The model catalogue: what ListAvailableModels reports (refreshed with a TTL), a built-in
//! fallback when the upstream cannot be asked, and the resolution of what clients write
//! (`claude-sonnet-4-5`, `claude-sonnet-4.5`, `claude-sonnet-4-5-20250929`,
//! `claude-3-7-sonnet-20250219`, `auto-kiro`, …) to the ids the service accepts.
//!
//! Resolution order: a configured alias (`MODEL_ALIASES`, `[model_aliases]`: `gpt-4o` →
//! `claude-sonnet-4.5`, its target then resolved as below); an exact catalogue id; a built-in
//! alias (`auto-kiro` → `auto`); the normalised name (spec 5.3: dashes to dots in versions,
//! date and `-latest` suffixes dropped, the `claude-3.7-sonnet` form reordered); the hidden
//! legacy ids (`claude-3.7-sonnet` → `CLAUDE_3_7_SONNET_20250219_V1_0`). Names compare
//! case-insensitively.
//!
//! **Unknown names** follow the [`UnknownModelPolicy`]. `nearest` (the default) serves a name
//! that is not in the catalogue but names a Claude family the catalogue has (`opus`,
//! `sonnet`, `haiku`, bare or as in `claude-opus-4-8`, `claude-sonnet-5`) with the catalogue
//! model of that family with the highest version, and logs that once per name at info: Claude
//! Code sends ids newer than any catalogue. A name of no known family is refused with close
//! matches, as under `reject`; `pass` sends it upstream as written.
//!
//! **Suffixes.** Claude Code's `…[1m]` (its 1M-context form) and peers' `…-thinking` name the
//! base model: `claude-sonnet-4-5[1m]` and `claude-sonnet-4-5-thinking` both resolve to
//! `claude-sonnet-4.5`. The `[1m]` form selects a 1M window only where the catalogue has one:
//! - if the catalogue lists a variant of the base id (`{base}[1m]` or `{base}-1m`, the form
//!   is assumed), that variant is sent and its window used;
//! - otherwise the base id is sent, and the window is the catalogue's `maxInputTokens` for it:
//!   1 000 000 when the catalogue reports that, else what it reports (e.g. 200 000). The
//!   gateway never claims 1M because of the suffix alone (spec 5.4: use the catalogue's
//!   value; Kiro has no documented 1M switch).
//!
//! The window of every model is looked up by the resolved id, never by the client's string.

use std::collections::HashSet;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime};

use crate::kiro::types::{ModelInfo, TokenLimits};

/// Aliases offered to clients (shown in `/v1/models`), resolved before anything else.
pub const ALIASES: &[(&str, &str)] = &[("auto-kiro", "auto")];
/// Display names for ids the service accepts but does not list.
pub const HIDDEN: &[(&str, &str)] = &[("claude-3.7-sonnet", "CLAUDE_3_7_SONNET_20250219_V1_0")];
/// Ids kept out of `/v1/models` (Cursor has its own `auto`).
pub const HIDDEN_FROM_LIST: &[&str] = &["auto"];
/// Used until (and whenever) the upstream list cannot be fetched.
pub const FALLBACK_MODELS: &[&str] = &[
    "auto",
    "claude-sonnet-4",
    "claude-sonnet-4.5",
    "claude-haiku-4.5",
    "claude-opus-4.5",
];
/// Input window assumed when the catalogue says nothing (spec 5.4).
pub const DEFAULT_MAX_INPUT_TOKENS: u64 = 200_000;

/// A client's model name resolved to a service id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// What the client wrote (echoed in responses).
    pub requested: String,
    /// What goes upstream as `modelId`.
    pub kiro_id: String,
    pub max_input_tokens: u64,
    /// The catalogue's `additionalModelRequestFieldsSchema` for this model: it takes native
    /// reasoning controls.
    pub reasoning_schema: Option<std::sync::Arc<serde_json::Value>>,
}

impl ResolvedModel {
    /// A name the catalogue does not know, sent as it is with the default window.
    pub fn unknown(name: &str) -> Self {
        ResolvedModel {
            requested: name.to_owned(),
            kiro_id: name.to_owned(),
            max_input_tokens: DEFAULT_MAX_INPUT_TOKENS,
            reasoning_schema: None,
        }
    }
}

/// What happens to a model name the catalogue does not know (`UNKNOWN_MODEL_POLICY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownModelPolicy {
    /// The newest catalogue model of the family the name names; else refused.
    #[default]
    Nearest,
    /// Refused with a 400 listing close matches.
    Reject,
    /// Sent upstream as written.
    Pass,
}

impl std::str::FromStr for UnknownModelPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "nearest" | "" => Ok(UnknownModelPolicy::Nearest),
            "reject" => Ok(UnknownModelPolicy::Reject),
            "pass" | "passthrough" | "pass_through" => Ok(UnknownModelPolicy::Pass),
            other => Err(format!("{other:?} is not nearest, reject or pass")),
        }
    }
}

/// Names logged at info as served by their family's newest model, at most.
const MAX_LOGGED_NAMES: usize = 256;

/// The Claude families a name can name.
const FAMILIES: &[&str] = &["opus", "sonnet", "haiku"];

/// The family a client's name names: a bare family (`opus`, `Sonnet`, `haiku[1m]`) or a
/// `claude-` name with a family part (`claude-opus-4-8`, `claude-3-5-haiku-latest`).
pub fn family_of(name: &str) -> Option<&'static str> {
    let n = normalize(name);
    if let Some(f) = FAMILIES.iter().find(|f| **f == n) {
        return Some(f);
    }
    let rest = n.strip_prefix("claude-")?;
    rest.split('-')
        .find_map(|part| FAMILIES.iter().find(|f| **f == part))
        .copied()
}

/// The family and version of a catalogue id in one of the two plain forms
/// (`claude-sonnet-4.5`, `claude-3.7-sonnet`, `claude-opus-4`); `None` for anything else
/// (`auto`, variants such as `claude-sonnet-4.5-1m`).
fn family_version(id: &str) -> Option<(&'static str, Vec<u32>)> {
    let n = normalize(id);
    let parts: Vec<&str> = n.split('-').collect();
    let (fam, ver) = match parts.as_slice() {
        ["claude", a, b] if FAMILIES.contains(a) => (*a, *b),
        ["claude", a, b] if FAMILIES.contains(b) => (*b, *a),
        _ => return None,
    };
    let version = ver
        .split('.')
        .map(|x| x.parse::<u32>().ok())
        .collect::<Option<Vec<u32>>>()?;
    FAMILIES.iter().find(|f| **f == fam).map(|f| (*f, version))
}

/// Where the catalogue's current list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogSource {
    Fallback,
    Upstream,
}

#[derive(Debug)]
struct State {
    models: Vec<ModelInfo>,
    fetched_at: Option<SystemTime>,
    source: CatalogSource,
}

/// See the module docs. Shared behind an `Arc`.
#[derive(Debug)]
pub struct ModelCatalog {
    state: RwLock<State>,
    ttl: Duration,
    /// What happens to names the catalogue does not know.
    pub policy: UnknownModelPolicy,
    /// Configured aliases, lower-cased alias → target (resolved like a client's name).
    aliases: Vec<(String, String)>,
    /// Names already logged as served by the nearest family model.
    logged_nearest: Mutex<HashSet<String>>,
}

fn fallback() -> Vec<ModelInfo> {
    FALLBACK_MODELS
        .iter()
        .map(|id| ModelInfo {
            model_id: (*id).to_owned(),
            ..Default::default()
        })
        .collect()
}

/// Claude Code's 1M-context suffix.
pub const LONG_CONTEXT_SUFFIX: &str = "[1m]";

/// Whether a client's name carries the `[1m]` suffix (anywhere among its trailing suffixes).
pub fn wants_long_context(name: &str) -> bool {
    let mut n = name.trim().to_ascii_lowercase();
    loop {
        if n.ends_with(LONG_CONTEXT_SUFFIX) {
            return true;
        }
        match n.strip_suffix("-thinking") {
            Some(s) => n = s.to_owned(),
            None => return false,
        }
    }
}

/// The normalised form of a name (spec 5.3 rules), lower case.
pub fn normalize(name: &str) -> String {
    let mut n = name.trim().to_ascii_lowercase();
    // `[1m]` and `-thinking`, in either order
    while let Some(s) = n
        .strip_suffix(LONG_CONTEXT_SUFFIX)
        .or_else(|| n.strip_suffix("-thinking"))
    {
        n = s.to_owned();
    }
    if let Some(s) = n.strip_suffix("-latest") {
        n = s.to_owned();
    }
    let parts: Vec<&str> = n.split('-').collect();
    let is_family = |s: &str| matches!(s, "haiku" | "sonnet" | "opus");
    let is_num = |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
    let is_date = |s: &str| s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit());
    match parts.as_slice() {
        // claude-{family}-{major}-{minor}[-date|-digits]
        ["claude", fam, major, minor, rest @ ..]
            if is_family(fam) && is_num(major) && is_num(minor) && rest.len() <= 1 =>
        {
            format!("claude-{fam}-{major}.{minor}")
        }
        // claude-{family}-{major}[-date]
        ["claude", fam, major, rest @ ..]
            if is_family(fam)
                && is_num(major)
                && rest.iter().all(|r| is_date(r))
                && rest.len() <= 1 =>
        {
            format!("claude-{fam}-{major}")
        }
        // claude-{major}-{minor}-{family}[-date]
        ["claude", major, minor, fam, rest @ ..]
            if is_family(fam) && is_num(major) && is_num(minor) && rest.len() <= 1 =>
        {
            format!("claude-{major}.{minor}-{fam}")
        }
        // already dotted with a date: claude-{family}-{x.y}-{date}
        ["claude", fam, ver, date] if is_family(fam) && ver.contains('.') && is_date(date) => {
            format!("claude-{fam}-{ver}")
        }
        // claude-{x.y}-{family}-{anything}
        ["claude", ver, fam, _rest @ ..]
            if is_family(fam) && ver.contains('.') && !_rest.is_empty() =>
        {
            format!("claude-{fam}-{ver}")
        }
        _ => n,
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

impl ModelCatalog {
    pub fn new(ttl: Duration, policy: UnknownModelPolicy) -> Self {
        ModelCatalog {
            state: RwLock::new(State {
                models: fallback(),
                fetched_at: None,
                source: CatalogSource::Fallback,
            }),
            ttl,
            policy,
            aliases: Vec::new(),
            logged_nearest: Mutex::new(HashSet::new()),
        }
    }

    /// With configured aliases (`MODEL_ALIASES`, `[model_aliases]`): each alias (compared
    /// case-insensitively) is resolved as its target, before anything else.
    pub fn with_aliases<I, A, T>(mut self, aliases: I) -> Self
    where
        I: IntoIterator<Item = (A, T)>,
        A: AsRef<str>,
        T: Into<String>,
    {
        self.aliases = aliases
            .into_iter()
            .map(|(a, t)| (a.as_ref().trim().to_ascii_lowercase(), t.into()))
            .collect();
        self
    }

    /// The configured aliases whose target the current catalogue does not know (by exact id,
    /// built-in alias, normalised name or hidden id; never by the unknown-model policy), as
    /// `(alias, target)`.
    pub fn unknown_alias_targets(&self) -> Vec<(String, String)> {
        self.aliases
            .iter()
            .filter(|(_, target)| self.resolve_known(target).is_none())
            .cloned()
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replace the list with what the upstream reported.
    pub fn set_models(&self, models: Vec<ModelInfo>) {
        if models.is_empty() {
            tracing::warn!("ListAvailableModels returned no models; keeping the current list");
            return;
        }
        let mut s = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.models = models;
        s.fetched_at = Some(SystemTime::now());
        s.source = CatalogSource::Upstream;
    }

    /// Whether the list is older than the TTL (or was never fetched).
    pub fn is_stale(&self) -> bool {
        self.read()
            .fetched_at
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age >= self.ttl)
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Age of the upstream list, `None` while on the fallback.
    pub fn age(&self) -> Option<Duration> {
        self.read().fetched_at.and_then(|t| t.elapsed().ok())
    }

    pub fn source(&self) -> CatalogSource {
        self.read().source
    }

    pub fn models(&self) -> Vec<ModelInfo> {
        self.read().models.clone()
    }

    /// Ids shown to clients: the catalogue minus hidden ones, plus aliases and hidden display
    /// names, sorted.
    pub fn listed_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .read()
            .models
            .iter()
            .map(|m| m.model_id.clone())
            .filter(|id| !HIDDEN_FROM_LIST.contains(&id.as_str()))
            .filter(|id| !HIDDEN.iter().any(|(_, internal)| internal == id))
            .collect();
        ids.extend(ALIASES.iter().map(|(a, _)| (*a).to_owned()));
        ids.extend(HIDDEN.iter().map(|(d, _)| (*d).to_owned()));
        ids.sort();
        ids.dedup();
        ids
    }

    fn max_input(&self, kiro_id: &str) -> u64 {
        self.catalogue_limits(kiro_id)
            .and_then(|t| t.max_input_tokens)
            .unwrap_or(DEFAULT_MAX_INPUT_TOKENS)
    }

    /// The catalogue's token limits of a service id, when it reports them.
    fn catalogue_limits(&self, kiro_id: &str) -> Option<TokenLimits> {
        self.read()
            .models
            .iter()
            .find(|m| m.model_id == kiro_id)
            .and_then(|m| m.token_limits.clone())
    }

    /// The token limits the catalogue reports for what a client's name resolves to (`None`
    /// when the name is unknown or the catalogue says nothing, as on the fallback list).
    pub fn limits(&self, requested: &str) -> Option<TokenLimits> {
        let resolved = self.resolve(requested).ok()?;
        self.catalogue_limits(&resolved.kiro_id)
    }

    fn reasoning_schema(&self, kiro_id: &str) -> Option<std::sync::Arc<serde_json::Value>> {
        self.read()
            .models
            .iter()
            .find(|m| m.model_id == kiro_id)
            .and_then(|m| m.extra.get("additionalModelRequestFieldsSchema"))
            .filter(|v| v.is_object())
            .map(|v| std::sync::Arc::new(v.clone()))
    }

    fn find_id(&self, name: &str) -> Option<String> {
        let s = self.read();
        s.models
            .iter()
            .find(|m| m.model_id.eq_ignore_ascii_case(name))
            .map(|m| m.model_id.clone())
    }

    /// A name the catalogue knows (exact id, built-in alias, normalised name, 1M variant,
    /// hidden id) as the service id to send; `None` when it does not know it.
    fn resolve_known(&self, name: &str) -> Option<String> {
        let name = name.trim();
        if let Some(id) = self.find_id(name) {
            return Some(id);
        }
        let lower = name.to_ascii_lowercase();
        if let Some((_, target)) = ALIASES.iter().find(|(a, _)| *a == lower) {
            return Some((*target).to_owned());
        }
        let norm = normalize(name);
        if wants_long_context(name) {
            if let Some(id) = self.long_context_variant(&norm) {
                return Some(id);
            }
        }
        if let Some(id) = self.find_id(&norm) {
            return Some(id);
        }
        HIDDEN
            .iter()
            .find(|(d, _)| *d == norm)
            .map(|(_, internal)| (*internal).to_owned())
    }

    /// A listed 1M variant of a base id (`{base}[1m]` or `{base}-1m`).
    fn long_context_variant(&self, base: &str) -> Option<String> {
        [format!("{base}{LONG_CONTEXT_SUFFIX}"), format!("{base}-1m")]
            .iter()
            .find_map(|v| self.find_id(v))
    }

    /// The catalogue model of `family` with the highest version (hidden ids by their display
    /// name).
    fn newest_of(&self, family: &str) -> Option<String> {
        let s = self.read();
        s.models
            .iter()
            .filter_map(|m| {
                let shown = HIDDEN
                    .iter()
                    .find(|(_, internal)| *internal == m.model_id)
                    .map_or(m.model_id.as_str(), |(display, _)| *display);
                family_version(shown)
                    .filter(|(f, _)| *f == family)
                    .map(|(_, v)| (v, m.model_id.clone()))
            })
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, id)| id)
    }

    /// Resolve a client's name; `Err` carries close matches for the error message.
    pub fn resolve(&self, requested: &str) -> Result<ResolvedModel, Vec<String>> {
        let done = |id: String| ResolvedModel {
            requested: requested.to_owned(),
            max_input_tokens: self.max_input(&id),
            reasoning_schema: self.reasoning_schema(&id),
            kiro_id: id,
        };
        let name = requested.trim();
        let lower = name.to_ascii_lowercase();
        // a configured alias stands for its target, spelled however the target is
        let name = self
            .aliases
            .iter()
            .find(|(a, _)| *a == lower)
            .map_or(name, |(_, target)| target.as_str());
        if let Some(id) = self.resolve_known(name) {
            return Ok(done(id));
        }
        match self.policy {
            UnknownModelPolicy::Pass => return Ok(done(name.to_owned())),
            UnknownModelPolicy::Nearest => {
                if let Some(family) = family_of(name) {
                    if let Some(base) = self.newest_of(family) {
                        let id = if wants_long_context(name) {
                            self.long_context_variant(&base).unwrap_or(base)
                        } else {
                            base
                        };
                        self.log_nearest(requested, family, &id);
                        return Ok(done(id));
                    }
                }
            }
            UnknownModelPolicy::Reject => {}
        }
        let norm = normalize(name);
        let mut candidates: Vec<(usize, String)> = self
            .listed_ids()
            .into_iter()
            .map(|id| (distance(&norm, &id), id))
            .collect();
        candidates.sort();
        Err(candidates.into_iter().take(3).map(|(_, id)| id).collect())
    }

    /// Say once per name which model serves it (at debug once [`MAX_LOGGED_NAMES`] names were
    /// said: clients choose the names, the set must stay bounded).
    fn log_nearest(&self, requested: &str, family: &str, id: &str) {
        let first = {
            let mut seen = crate::lock(&self.logged_nearest);
            !seen.contains(requested)
                && seen.len() < MAX_LOGGED_NAMES
                && seen.insert(requested.to_owned())
        };
        if !first {
            tracing::debug!(
                requested,
                model = id,
                "served by the newest model of its family"
            );
        } else {
            tracing::info!(
                requested,
                model = id,
                family,
                "a model the catalogue lacks is served by the newest model of its family (UNKNOWN_MODEL_POLICY=nearest)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_the_spec_forms() {
        for (input, want) in [
            ("claude-haiku-4-5-20251001", "claude-haiku-4.5"),
            ("claude-sonnet-4-5", "claude-sonnet-4.5"),
            ("claude-sonnet-4-20250514", "claude-sonnet-4"),
            ("claude-3-7-sonnet-20250219", "claude-3.7-sonnet"),
            ("claude-haiku-4.5-20251001", "claude-haiku-4.5"),
            ("claude-4.5-opus-high", "claude-opus-4.5"),
            ("claude-sonnet-4-5-latest", "claude-sonnet-4.5"),
            ("Claude-Sonnet-4.5", "claude-sonnet-4.5"),
            ("claude-opus-4-6[1m]", "claude-opus-4.6"),
            ("claude-sonnet-4-5-thinking", "claude-sonnet-4.5"),
            ("claude-sonnet-4-5-thinking[1m]", "claude-sonnet-4.5"),
            ("claude-sonnet-4-5[1m]-thinking", "claude-sonnet-4.5"),
        ] {
            assert_eq!(normalize(input), want, "{input}");
        }
    }

    #[test]
    fn resolves_every_client_spelling() {
        let c = ModelCatalog::new(Duration::from_secs(60), UnknownModelPolicy::Reject);
        for (input, want) in [
            ("claude-sonnet-4-5", "claude-sonnet-4.5"),
            ("claude-sonnet-4.5", "claude-sonnet-4.5"),
            ("claude-sonnet-4-5-20250929", "claude-sonnet-4.5"),
            ("claude-haiku-4-5", "claude-haiku-4.5"),
            (
                "claude-3-7-sonnet-20250219",
                "CLAUDE_3_7_SONNET_20250219_V1_0",
            ),
            ("auto", "auto"),
            ("auto-kiro", "auto"),
        ] {
            let r = c.resolve(input).unwrap();
            assert_eq!(r.kiro_id, want, "{input}");
            assert_eq!(r.requested, input);
        }
        let err = c.resolve("claude-sonet-4.5").unwrap_err();
        assert_eq!(err[0], "claude-sonnet-4.5");
        let pass = ModelCatalog::new(Duration::from_secs(60), UnknownModelPolicy::Pass);
        assert_eq!(pass.resolve("gpt-4o").unwrap().kiro_id, "gpt-4o");
    }

    #[test]
    fn lists_aliases_and_hides_auto() {
        let c = ModelCatalog::new(Duration::from_secs(60), UnknownModelPolicy::Reject);
        assert_eq!(
            c.listed_ids(),
            [
                "auto-kiro",
                "claude-3.7-sonnet",
                "claude-haiku-4.5",
                "claude-opus-4.5",
                "claude-sonnet-4",
                "claude-sonnet-4.5"
            ]
        );
        assert!(c.is_stale());
        c.set_models(vec![ModelInfo {
            model_id: "claude-sonnet-4.5".into(),
            token_limits: Some(crate::kiro::types::TokenLimits {
                max_input_tokens: Some(1_000_000),
                max_output_tokens: None,
            }),
            ..Default::default()
        }]);
        assert!(!c.is_stale());
        assert_eq!(
            c.resolve("claude-sonnet-4-5").unwrap().max_input_tokens,
            1_000_000
        );
    }

    fn model(id: &str, max_in: u64, max_out: u64) -> ModelInfo {
        ModelInfo {
            model_id: id.into(),
            token_limits: Some(TokenLimits {
                max_input_tokens: Some(max_in),
                max_output_tokens: Some(max_out),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn one_m_suffix_takes_the_catalogue_window_of_the_base() {
        let c = ModelCatalog::new(Duration::from_secs(60), UnknownModelPolicy::Reject);
        c.set_models(vec![
            model("claude-sonnet-4.5", 200_000, 64_000),
            model("claude-opus-4.6", 1_000_000, 128_000),
        ]);
        // the catalogue says 200k: the suffix does not make it 1M
        let r = c.resolve("claude-sonnet-4-5[1m]").unwrap();
        assert_eq!(
            (r.kiro_id.as_str(), r.max_input_tokens),
            ("claude-sonnet-4.5", 200_000)
        );
        // the catalogue says 1M: the suffix (or none) gets it
        let r = c.resolve("claude-opus-4-6[1m]").unwrap();
        assert_eq!(
            (r.kiro_id.as_str(), r.max_input_tokens),
            ("claude-opus-4.6", 1_000_000)
        );
        assert!(wants_long_context("claude-opus-4-6[1M]"));
        assert!(!wants_long_context("claude-opus-4-6"));
        assert_eq!(
            c.limits("claude-opus-4-6[1m]").unwrap().max_output_tokens,
            Some(128_000)
        );
        // unknown to the catalogue's limits (fallback ids): nothing claimed
        let fallback = ModelCatalog::new(Duration::from_secs(60), UnknownModelPolicy::Reject);
        assert_eq!(fallback.limits("claude-sonnet-4.5"), None);
    }

    #[test]
    fn one_m_suffix_selects_a_listed_variant() {
        let c = ModelCatalog::new(Duration::from_secs(60), UnknownModelPolicy::Reject);
        c.set_models(vec![
            model("claude-sonnet-4.5", 200_000, 64_000),
            model("claude-sonnet-4.5-1m", 1_000_000, 64_000),
        ]);
        let r = c.resolve("claude-sonnet-4-5-20250929[1m]").unwrap();
        assert_eq!(
            (r.kiro_id.as_str(), r.max_input_tokens),
            ("claude-sonnet-4.5-1m", 1_000_000)
        );
        let r = c.resolve("claude-sonnet-4-5").unwrap();
        assert_eq!(
            (r.kiro_id.as_str(), r.max_input_tokens),
            ("claude-sonnet-4.5", 200_000)
        );
    }

    fn catalogue(ids: &[&str], policy: UnknownModelPolicy) -> ModelCatalog {
        let c = ModelCatalog::new(Duration::from_secs(60), policy);
        c.set_models(
            ids.iter()
                .map(|id| ModelInfo {
                    model_id: (*id).into(),
                    ..Default::default()
                })
                .collect(),
        );
        c
    }

    const KIRO_LIST: &[&str] = &[
        "auto",
        "claude-sonnet-4",
        "claude-sonnet-4.5",
        "claude-haiku-4.5",
        "claude-opus-4.5",
        "CLAUDE_3_7_SONNET_20250219_V1_0",
    ];

    #[test]
    fn nearest_serves_claude_code_ids_with_the_newest_model_of_their_family() {
        let c = catalogue(KIRO_LIST, UnknownModelPolicy::Nearest);
        for (input, want) in [
            ("claude-opus-4-8", "claude-opus-4.5"),
            ("claude-sonnet-5", "claude-sonnet-4.5"),
            ("claude-sonnet-4-6", "claude-sonnet-4.5"),
            ("claude-haiku-4-5-20251001", "claude-haiku-4.5"),
            ("claude-haiku-5-20260101", "claude-haiku-4.5"),
            ("claude-3-5-haiku-latest", "claude-haiku-4.5"),
            ("opus", "claude-opus-4.5"),
            ("Sonnet", "claude-sonnet-4.5"),
            ("haiku", "claude-haiku-4.5"),
            ("opus[1m]", "claude-opus-4.5"),
            ("claude-opus-4-8[1m]", "claude-opus-4.5"),
        ] {
            let r = c.resolve(input).unwrap();
            assert_eq!(r.kiro_id, want, "{input}");
            assert_eq!(r.requested, input);
        }
        // a listed 1M variant is taken for [1m] there too
        let c = catalogue(
            &["claude-opus-4.5", "claude-opus-4.5-1m", "claude-opus-4"],
            UnknownModelPolicy::Nearest,
        );
        assert_eq!(
            c.resolve("claude-opus-9[1m]").unwrap().kiro_id,
            "claude-opus-4.5-1m"
        );
        assert_eq!(
            c.resolve("claude-opus-9").unwrap().kiro_id,
            "claude-opus-4.5"
        );
    }

    #[test]
    fn nearest_picks_the_highest_version_numerically() {
        let c = catalogue(
            &[
                "claude-sonnet-4.9",
                "claude-sonnet-4.10",
                "claude-sonnet-4",
                "claude-3.7-sonnet",
            ],
            UnknownModelPolicy::Nearest,
        );
        assert_eq!(
            c.resolve("claude-sonnet-5").unwrap().kiro_id,
            "claude-sonnet-4.10"
        );
        // the hidden 3.7 id counts by its display name
        let c = catalogue(
            &["CLAUDE_3_7_SONNET_20250219_V1_0"],
            UnknownModelPolicy::Nearest,
        );
        assert_eq!(
            c.resolve("sonnet").unwrap().kiro_id,
            "CLAUDE_3_7_SONNET_20250219_V1_0"
        );
    }

    #[test]
    fn nearest_refuses_names_of_no_known_family_with_close_matches() {
        let c = catalogue(KIRO_LIST, UnknownModelPolicy::Nearest);
        assert_eq!(
            c.resolve("gpt-4o").unwrap_err(),
            ["auto-kiro", "claude-opus-4.5", "claude-sonnet-4"]
        );
        let err = c.resolve("claude-sonet-4.5").unwrap_err();
        assert_eq!(err[0], "claude-sonnet-4.5");
        // a family the catalogue lacks is no family at all
        let c = catalogue(&["claude-sonnet-4.5"], UnknownModelPolicy::Nearest);
        assert!(c.resolve("claude-opus-4-8").is_err());
        assert!(c.resolve("opus").is_err());
    }

    #[test]
    fn reject_and_pass_keep_their_meaning_for_family_names() {
        let c = catalogue(KIRO_LIST, UnknownModelPolicy::Reject);
        assert_eq!(
            c.resolve("claude-opus-4-8").unwrap_err()[0],
            "claude-opus-4.5"
        );
        assert!(c.resolve("sonnet").is_err());
        let c = catalogue(KIRO_LIST, UnknownModelPolicy::Pass);
        assert_eq!(
            c.resolve("claude-opus-4-8").unwrap().kiro_id,
            "claude-opus-4-8"
        );
        // known names resolve the same under every policy
        assert_eq!(
            c.resolve("claude-sonnet-4-5").unwrap().kiro_id,
            "claude-sonnet-4.5"
        );
    }

    #[test]
    fn policy_names_parse() {
        assert_eq!("".parse(), Ok(UnknownModelPolicy::Nearest));
        assert_eq!("Nearest".parse(), Ok(UnknownModelPolicy::Nearest));
        assert_eq!("reject".parse(), Ok(UnknownModelPolicy::Reject));
        assert_eq!("pass".parse(), Ok(UnknownModelPolicy::Pass));
        assert_eq!(
            "closest".parse::<UnknownModelPolicy>(),
            Err("\"closest\" is not nearest, reject or pass".to_owned())
        );
    }

    #[test]
    fn aliases_resolve_before_normalisation_and_unknown_targets_are_named() {
        let c = catalogue(KIRO_LIST, UnknownModelPolicy::Reject).with_aliases([
            ("gpt-4o", "claude-sonnet-4-5"),
            ("O3", "claude-opus-4.5"),
            ("claude-sonnet-4", "claude-haiku-4.5"),
            ("gpt-9", "claude-sonnet-9"),
        ]);
        for (input, want) in [
            ("gpt-4o", "claude-sonnet-4.5"),
            ("o3", "claude-opus-4.5"),
            ("GPT-4o", "claude-sonnet-4.5"),
            // an alias wins even over a catalogue id
            ("claude-sonnet-4", "claude-haiku-4.5"),
        ] {
            let r = c.resolve(input).unwrap();
            assert_eq!((r.requested.as_str(), r.kiro_id.as_str()), (input, want));
        }
        assert_eq!(
            c.unknown_alias_targets(),
            [("gpt-9".to_owned(), "claude-sonnet-9".to_owned())]
        );
        // an unknown target is never resolved by the policy when checked
        let c = catalogue(KIRO_LIST, UnknownModelPolicy::Nearest)
            .with_aliases([("gpt-9", "claude-sonnet-9")]);
        assert_eq!(c.unknown_alias_targets().len(), 1);
    }

    #[test]
    fn nearest_logs_once_per_name_at_info() {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                crate::lock(&self.0).extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_writer(move || writer.clone())
            .finish();
        let c = catalogue(KIRO_LIST, UnknownModelPolicy::Nearest);
        tracing::subscriber::with_default(subscriber, || {
            for name in [
                "claude-opus-4-8",
                "claude-opus-4-8",
                "opus",
                "claude-sonnet-4-5",
            ] {
                c.resolve(name).unwrap();
            }
        });
        let text = String::from_utf8(crate::lock(&buf.0).clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                " INFO a model the catalogue lacks is served by the newest model of its family (UNKNOWN_MODEL_POLICY=nearest) requested=\"claude-opus-4-8\" model=\"claude-opus-4.5\" family=\"opus\"",
                " INFO a model the catalogue lacks is served by the newest model of its family (UNKNOWN_MODEL_POLICY=nearest) requested=\"opus\" model=\"claude-opus-4.5\" family=\"opus\"",
            ]
        );
    }
}
