//! Token figures: what the service reported, else a documented estimate.
//!
//! Kiro's q.amazonaws.com protocol reports no token counts. The gateway therefore reports:
//! - **prompt tokens**: `contextUsagePercentage / 100 × maxInputTokens` of the resolved model when
//!   the service sent a context-usage event (its own measurement of the prompt), else the local
//!   estimate of the request text;
//! - **completion tokens**: the local estimate of the answer text plus tool-call arguments.
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

/// Usage of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    pub prompt_tokens: u64,
    /// Answer, tool arguments and reasoning.
    pub completion_tokens: u64,
    /// The reasoning part of `completion_tokens`.
    pub reasoning_tokens: u64,
    /// Kiro credits charged (`meteringEvent`), when reported.
    pub credits: Option<f64>,
    /// Whether the prompt figure came from the service's context-usage report.
    pub prompt_from_service: bool,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

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
            _ => {}
        }
    }

    pub fn usage(&self) -> Usage {
        let from_service = self
            .context_percent
            .filter(|p| *p > 0.0 && self.max_input_tokens > 0)
            .map(|p| (p / 100.0 * self.max_input_tokens as f64).round() as u64);
        Usage {
            prompt_tokens: from_service.unwrap_or(self.prompt_estimate),
            completion_tokens: self.completion.tokens() + self.reasoning.tokens(),
            reasoning_tokens: self.reasoning.tokens(),
            credits: self.credits,
            prompt_from_service: from_service.is_some(),
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
        assert!(u.prompt_from_service);
        assert_eq!(u.total(), 3000 + u.completion_tokens);
    }
}
