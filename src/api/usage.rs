//! Token figures: what the service reported, else a documented estimate.
//!
//! In this order (the first that applies decides, and `usage.kiro.source` says which):
//! - `service`: the answer carried a `metadataEvent.tokenUsage` (newer runtimes). Prompt tokens
//!   are its `uncachedInputTokens + cacheReadInputTokens + cacheWriteInputTokens` (OpenAI
//!   `prompt_tokens`; Anthropic `input_tokens` is the uncached part alone, with the cache figures
//!   beside it), completion tokens its `outputTokens`. Cache figures appear only when the
//!   service reported them.
//! - `context`: the answer carried a `contextUsageEvent`: prompt tokens are
//!   `contextUsagePercentage / 100 × maxInputTokens` of the resolved model (the service's own
//!   measurement of the prompt); completion tokens are the local estimate.
//! - `estimate`: neither: the local estimate of the request text and of the answer (text, tool
//!   arguments, reasoning).
//!
//! `reasoning_tokens` is always the local estimate of the reasoning text (the service does not
//! split its output count), capped at the completion figure.
//!
//! The local estimate counts about four ASCII characters per token and one token per other
//! character (CJK, emoji), which tracks Claude's tokenizer within roughly ±20 % on English
//! prose and code. It is an estimate, and documented as one; it is never a made-up constant.

/// Estimated tokens of a text.
pub fn estimate_tokens(text: &str) -> u64 {
    let mut c = CharCount::default();
    c.add(text);
    c.tokens()
}

/// Running character counts behind [`estimate_tokens`], so a streamed answer is estimated as a
/// whole rather than rounded up per delta.
#[derive(Debug, Clone, Copy, Default)]
pub struct CharCount {
    ascii: u64,
    other: u64,
}

impl CharCount {
    pub fn add(&mut self, text: &str) {
        let ascii = text.bytes().filter(u8::is_ascii).count() as u64;
        self.ascii += ascii;
        self.other += text.chars().count() as u64 - ascii;
    }

    pub fn tokens(&self) -> u64 {
        self.ascii.div_ceil(4) + self.other
    }
}

pub use crate::context::usage::{Usage, UsageReport, UsageSource};

/// Accumulates what an answer's events say about usage.
#[derive(Debug, Clone, Default)]
pub struct UsageTracker {
    /// Local estimate of the request's prompt.
    pub prompt_estimate: u64,
    /// Input window of the model, for the context-usage figure.
    pub max_input_tokens: u64,
    completion: CharCount,
    reasoning: CharCount,
    context_percent: Option<f64>,
    credits: Option<f64>,
    service: Option<crate::kiro::TokenUsage>,
    stop_reason: Option<String>,
    report: Option<UsageReport>,
}

impl UsageTracker {
    pub fn new(prompt_estimate: u64, max_input_tokens: u64) -> Self {
        UsageTracker {
            prompt_estimate,
            max_input_tokens,
            ..Default::default()
        }
    }

    /// Count reasoning text (part of the completion, also reported on its own).
    pub fn add_reasoning(&mut self, text: &str) {
        self.reasoning.add(text);
    }

    /// Count a tool call's argument text.
    pub fn add_tool_input(&mut self, input: &crate::kiro::ToolInput) {
        match input {
            crate::kiro::ToolInput::Fragment(s) => self.completion.add(s),
            crate::kiro::ToolInput::Whole(v) => self.completion.add(&v.to_string()),
            crate::kiro::ToolInput::None => {}
        }
    }

    /// Count output text (answer or tool arguments).
    pub fn add_output(&mut self, text: &str) {
        self.completion.add(text);
    }

    pub fn on_event(&mut self, ev: &crate::kiro::Event) {
        match ev {
            crate::kiro::Event::Metering(m) => {
                self.credits = Some(self.credits.unwrap_or(0.0) + m.usage);
            }
            crate::kiro::Event::ContextUsage { percentage } => {
                self.context_percent = Some(*percentage);
            }
            crate::kiro::Event::Metadata(m) => {
                if let Some(u) = m.token_usage {
                    if u.uncached_input_tokens.is_some() || u.output_tokens.is_some() {
                        self.service = Some(u);
                    }
                    if let Some(p) = u.context_usage_percentage {
                        self.context_percent.get_or_insert(p);
                    }
                }
                if m.stop_reason.is_some() {
                    self.stop_reason.clone_from(&m.stop_reason);
                }
            }
            _ => {}
        }
    }

    /// The service's `metadataEvent.stopReason`, if it sent one.
    pub fn stop_reason(&self) -> Option<&str> {
        self.stop_reason.as_deref()
    }

    /// Write every computed [`Usage`] into `report` too (the last one is the answer's final
    /// figure).
    pub fn report_to(&mut self, report: UsageReport) {
        self.report = Some(report);
    }

    /// The figures so far (at the end of the answer: its final usage).
    pub fn usage(&self) -> Usage {
        let u = self.compute();
        if let Some(r) = &self.report {
            r.set(u);
        }
        u
    }

    fn compute(&self) -> Usage {
        let estimated_completion = self.completion.tokens() + self.reasoning.tokens();
        if let Some(s) = self.service {
            let cache_read = s.cache_read_input_tokens;
            let cache_write = s.cache_write_input_tokens;
            let prompt = s.uncached_input_tokens.unwrap_or(0)
                + cache_read.unwrap_or(0)
                + cache_write.unwrap_or(0);
            let completion = s.output_tokens.unwrap_or(estimated_completion);
            return Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                reasoning_tokens: self.reasoning.tokens().min(completion),
                cache_read_tokens: cache_read,
                cache_write_tokens: cache_write,
                credits: self.credits,
                source: UsageSource::Service,
            };
        }
        let from_context = self
            .context_percent
            .filter(|p| *p > 0.0 && self.max_input_tokens > 0)
            .map(|p| (p / 100.0 * self.max_input_tokens as f64).round() as u64);
        Usage {
            prompt_tokens: from_context.unwrap_or(self.prompt_estimate),
            completion_tokens: estimated_completion,
            reasoning_tokens: self.reasoning.tokens(),
            cache_read_tokens: None,
            cache_write_tokens: None,
            credits: self.credits,
            source: if from_context.is_some() {
                UsageSource::Context
            } else {
                UsageSource::Estimate
            },
        }
    }
}

/// Local estimate of the prompt a Kiro request carries: every content, tool result, tool use
/// and tool definition, plus a few tokens of framing per message.
pub fn estimate_request(req: &crate::kiro::types::GenerateAssistantRequest) -> u64 {
    use crate::kiro::types::{HistoryMessage, UserInputMessage};
    let mut c = CharCount::default();
    let mut messages = 1u64;
    let mut images = 0u64;
    let mut user = |u: &UserInputMessage, c: &mut CharCount| {
        c.add(&u.content);
        images += u.images.len() as u64;
        if let Some(ctx) = &u.user_input_message_context {
            for t in &ctx.tools {
                let s = &t.tool_specification;
                c.add(&s.name);
                c.add(&s.description);
                c.add(&s.input_schema.json.to_string());
            }
            for r in &ctx.tool_results {
                for part in &r.content {
                    c.add(&part.text);
                }
            }
        }
    };
    for h in &req.conversation_state.history {
        messages += 1;
        match h {
            HistoryMessage::UserInputMessage(u) => user(u, &mut c),
            HistoryMessage::AssistantResponseMessage(a) => {
                c.add(&a.content);
                for t in &a.tool_uses {
                    c.add(&t.name);
                    c.add(&t.input.to_string());
                }
            }
        }
    }
    user(
        &req.conversation_state.current_message.user_input_message,
        &mut c,
    );
    // images: a flat per-image figure (Claude charges by pixels, which the gateway does not
    // decode); 4 tokens of framing per message
    c.tokens() + messages * 4 + images * 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_are_monotonic_and_count_wide_characters() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens("日本"), 2);
        assert!(estimate_tokens("hello world, this is a sentence") > estimate_tokens("hello"));
    }

    #[test]
    fn prefers_the_service_context_figure() {
        let mut t = UsageTracker::new(50, 200_000);
        t.add_output("hello there");
        assert_eq!(t.usage().prompt_tokens, 50);
        t.on_event(&crate::kiro::Event::ContextUsage { percentage: 1.5 });
        let u = t.usage();
        assert_eq!(u.prompt_tokens, 3000);
        assert_eq!(u.source, UsageSource::Context);
        assert_eq!(u.cache_read_tokens, None);
        assert_eq!(u.total(), 3000 + u.completion_tokens);
    }

    #[test]
    fn service_counts_win_and_cache_figures_are_only_what_was_reported() {
        let mut t = UsageTracker::new(50, 200_000);
        t.add_output("some answer text");
        t.on_event(&crate::kiro::Event::ContextUsage { percentage: 1.5 });
        t.on_event(&crate::kiro::Event::Metadata(crate::kiro::Metadata {
            token_usage: Some(crate::kiro::TokenUsage {
                uncached_input_tokens: Some(120),
                cache_read_input_tokens: Some(3000),
                output_tokens: Some(42),
                ..Default::default()
            }),
            stop_reason: Some("END_TURN".into()),
            stop_details: None,
        }));
        let u = t.usage();
        assert_eq!(u.source, UsageSource::Service);
        assert_eq!(u.prompt_tokens, 3120);
        assert_eq!(u.uncached_prompt_tokens(), 120);
        assert_eq!(u.completion_tokens, 42);
        assert_eq!(u.cache_read_tokens, Some(3000));
        assert_eq!(u.cache_write_tokens, None, "never simulated");
        assert_eq!(t.stop_reason(), Some("END_TURN"));
        assert_eq!(
            UsageTracker::new(7, 0).usage().source,
            UsageSource::Estimate
        );
    }
}
