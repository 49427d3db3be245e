//! What an answer used (tokens, credits), and the slot its final figures are reported into
//! for the metrics.

/// Where the token figures of an answer came from (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UsageSource {
    /// The service's own `tokenUsage` figures.
    Service,
    /// Derived from the service's context-usage percentage and the model's window.
    Context,
    /// The gateway's estimate from the text (no figure from the service).
    #[default]
    Estimate,
}

impl UsageSource {
    /// `service`, `context` or `estimate` (the `source` member of the usage objects).
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Service => "service",
            UsageSource::Context => "context",
            UsageSource::Estimate => "estimate",
        }
    }
}

/// Usage of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    /// Every input token, cached or not.
    pub prompt_tokens: u64,
    /// Answer, tool arguments and reasoning.
    pub completion_tokens: u64,
    /// The reasoning part of `completion_tokens`.
    pub reasoning_tokens: u64,
    /// Input tokens read from the prompt cache, when the service reported them.
    pub cache_read_tokens: Option<u64>,
    /// Input tokens written to the prompt cache, when the service reported them.
    pub cache_write_tokens: Option<u64>,
    /// Kiro credits charged (`meteringEvent`), when reported.
    pub credits: Option<f64>,
    /// Where the token figures came from.
    pub source: UsageSource,
}

impl Usage {
    /// Prompt and completion tokens together.
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// Input tokens that were neither read from nor written to the cache (Anthropic's
    /// `input_tokens`).
    pub fn uncached_prompt_tokens(&self) -> u64 {
        self.prompt_tokens
            .saturating_sub(self.cache_read_tokens.unwrap_or(0))
            .saturating_sub(self.cache_write_tokens.unwrap_or(0))
    }

    /// `{"source": …, "credits": …}`: the gateway's own usage member, in both dialects.
    pub fn kiro_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"source": self.source.as_str()});
        if let Some(c) = self.credits {
            v["credits"] = serde_json::json!(c);
        }
        v
    }
}

/// A slot the final usage of an answer is written into, for whoever reads it after the answer
/// (the metrics layer); cheap to clone, shared by the clones.
#[derive(Debug, Clone, Default)]
pub struct UsageReport(std::sync::Arc<std::sync::Mutex<Option<Usage>>>);

impl UsageReport {
    /// Keep `u` (the last one set wins: an encoder computes the final figures last).
    pub fn set(&self, u: Usage) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(u);
        }
    }

    /// The figures set, once.
    pub fn take(&self) -> Option<Usage> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }
}
