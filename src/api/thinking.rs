//! "Fake reasoning": Kiro has no reasoning switch, so the gateway asks for it in the prompt and
//! separates the model's `<thinking>…</thinking>` block from the answer.
//!
//! [`ThinkingParser`] is a small state machine over the streamed text. It recognises an opening
//! tag (`<thinking>`, `<think>`, `<reasoning>`, `<thought>`) only at the very start of the answer
//! (after optional whitespace); both tags may be split at any byte across chunks. While the start
//! could still be a tag it waits; as soon as it cannot be, the text is passed through and
//! detection is over for the rest of the answer (tag-like text later on is left alone). Inside
//! the block it emits reasoning as it arrives, holding back only enough characters to never
//! emit part of a split closing tag. Whitespace between the closing tag and the answer is
//! dropped. An unclosed block at the end is emitted as reasoning.
//!
//! [`split_thinking`] applies the parser to a stream of Kiro events: text events become
//! [`Event::Reasoning`] and [`Event::Text`] pieces according to the [`ThinkingMode`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use serde_json::Value;

use crate::kiro::client::KiroEvents;
use crate::kiro::Event;

const OPEN_TAGS: &[(&str, &str)] = &[
    ("<thinking>", "</thinking>"),
    ("<think>", "</think>"),
    ("<reasoning>", "</reasoning>"),
    ("<thought>", "</thought>"),
];

/// What happens to the model's thinking block (`FAKE_REASONING_HANDLING`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThinkingMode {
    /// Reasoning goes to the dialect's reasoning field (`reasoning_content`, `thinking` blocks).
    #[default]
    AsReasoningContent,
    /// Reasoning is dropped.
    Remove,
    /// Nothing is parsed: the text, tags included, is the answer, byte for byte.
    Pass,
    /// The reasoning is kept as answer text, without its tags.
    StripTags,
}

impl std::str::FromStr for ThinkingMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "as_reasoning_content" | "" => Ok(ThinkingMode::AsReasoningContent),
            "remove" => Ok(ThinkingMode::Remove),
            "pass" => Ok(ThinkingMode::Pass),
            "strip_tags" => Ok(ThinkingMode::StripTags),
            other => Err(format!(
                "FAKE_REASONING_HANDLING must be as_reasoning_content, remove, pass or strip_tags, not {other:?}"
            )),
        }
    }
}

/// How reasoning is asked of the service (`REASONING_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReasoningMode {
    /// Native when the model's catalogue entry advertises `additionalModelRequestFieldsSchema`
    /// in a shape the gateway understands, else prompt tags.
    #[default]
    Auto,
    /// Always `additionalModelRequestFields` (a default shape when the model advertises none).
    Native,
    /// Always prompt tags, parsed back out of the answer.
    Prompt,
}

impl std::str::FromStr for ReasoningMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(ReasoningMode::Auto),
            "native" => Ok(ReasoningMode::Native),
            "prompt" => Ok(ReasoningMode::Prompt),
            other => Err(format!(
                "REASONING_MODE must be auto, native or prompt, not {other:?}"
            )),
        }
    }
}

/// What a request asks of reasoning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasoningAsk {
    /// Token budget (asked for, or derived from the effort or the default).
    pub budget: u32,
    /// Anthropic `thinking: {type: "adaptive"}`.
    pub adaptive: bool,
    /// OpenAI `reasoning_effort`, Responses `reasoning.effort` or Anthropic
    /// `output_config.effort`, as the client wrote it; `None` for a budget request. A model
    /// that takes adaptive thinking with an effort gets it natively (see [`native_fields`]).
    pub effort: Option<String>,
}

impl ReasoningAsk {
    pub fn budget(budget: u32) -> Self {
        ReasoningAsk {
            budget,
            adaptive: false,
            effort: None,
        }
    }
}

fn string_enum(schema: Option<&Value>) -> Vec<&str> {
    schema
        .and_then(|s| s.get("enum"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// `effort` as one of `allowed` (case-insensitive), or the nearest level the schema has.
fn pick_effort(effort: &str, allowed: &[&str]) -> String {
    let e = effort.trim().to_ascii_lowercase();
    if allowed.is_empty() || allowed.contains(&e.as_str()) {
        return e;
    }
    const LADDER: &[&str] = &["minimal", "low", "medium", "high", "xhigh", "max"];
    let rank = |x: &str| LADDER.iter().position(|l| *l == x);
    let want = rank(&e).unwrap_or(2);
    // between two levels as near, the stronger one (`xhigh` → `max` rather than `high`)
    allowed
        .iter()
        .min_by_key(|a| {
            rank(a).map_or((usize::MAX, std::cmp::Reverse(0)), |r| {
                (r.abs_diff(want), std::cmp::Reverse(r))
            })
        })
        .map(|a| (*a).to_owned())
        .unwrap_or(e)
}

/// An effort word for a budget, relative to the default budget (the inverse of
/// [`ThinkingDefaults::for_effort`]).
fn effort_for_budget(budget: u32, default: u32) -> &'static str {
    let d = default.max(1);
    if budget <= d / 2 {
        "low"
    } else if budget <= d.saturating_mul(2) {
        "medium"
    } else {
        "high"
    }
}

/// `additionalModelRequestFields` for `ask`, shaped by the model's
/// `additionalModelRequestFieldsSchema`. The schema is read as a JSON Schema object whose
/// `properties` may hold `thinking` (with `type` among `enabled` / `adaptive` and an optional
/// `budget_tokens` with `minimum` / `maximum`), `output_config` (with `effort`) or `reasoning`
/// (with `effort`). `None` when the schema has none of these (the caller falls back to prompt
/// tags).
///
/// With `thinking` in the schema: `adaptive` when the client asked for it, when it asked for
/// an effort and the schema takes `adaptive` and `output_config.effort` (the effort goes as
/// it is, not as a budget derived from it), or when the schema offers nothing else; a budget
/// request (no effort) keeps `enabled` with `budget_tokens`.
pub fn native_fields(
    schema: &Value,
    ask: &ReasoningAsk,
    defaults: ThinkingDefaults,
) -> Option<Value> {
    let props = schema.get("properties")?;
    if let Some(t) = props.get("thinking") {
        let tprops = t.get("properties");
        let types = string_enum(tprops.and_then(|p| p.get("type")));
        let supports = |x: &str| types.is_empty() || types.contains(&x);
        let takes_effort = props
            .get("output_config")
            .and_then(|oc| oc.get("properties"))
            .is_some_and(|p| p.get("effort").is_some());
        let native_effort = ask.effort.is_some() && takes_effort;
        let adaptive =
            supports("adaptive") && (ask.adaptive || native_effort || !supports("enabled"));
        let mut out = serde_json::Map::new();
        if adaptive {
            out.insert("thinking".into(), serde_json::json!({"type": "adaptive"}));
            if let (Some(effort), Some(oc)) = (&ask.effort, props.get("output_config")) {
                let allowed = string_enum(oc.get("properties").and_then(|p| p.get("effort")));
                out.insert(
                    "output_config".into(),
                    serde_json::json!({"effort": pick_effort(effort, &allowed)}),
                );
            }
        } else if supports("enabled") {
            let bt = tprops.and_then(|p| p.get("budget_tokens"));
            let min = bt.and_then(|b| b.get("minimum")).and_then(Value::as_u64);
            let max = bt.and_then(|b| b.get("maximum")).and_then(Value::as_u64);
            let mut budget = u64::from(ask.budget);
            if let Some(m) = min {
                budget = budget.max(m);
            }
            if let Some(m) = max {
                budget = budget.min(m);
            }
            out.insert(
                "thinking".into(),
                serde_json::json!({"type": "enabled", "budget_tokens": budget}),
            );
        } else {
            return None;
        }
        return Some(Value::Object(out));
    }
    if let Some(r) = props.get("reasoning") {
        let allowed = string_enum(r.get("properties").and_then(|p| p.get("effort")));
        let effort = match &ask.effort {
            Some(e) => pick_effort(e, &allowed),
            None => pick_effort(effort_for_budget(ask.budget, defaults.budget), &allowed),
        };
        return Some(serde_json::json!({"reasoning": {"effort": effort}}));
    }
    None
}

/// The shape sent when `REASONING_MODE=native` and the model advertises no schema.
pub fn default_native_fields(ask: &ReasoningAsk) -> Value {
    if ask.adaptive {
        let mut v = serde_json::json!({"thinking": {"type": "adaptive"}});
        if let Some(e) = &ask.effort {
            v["output_config"] = serde_json::json!({"effort": e.trim().to_ascii_lowercase()});
        }
        v
    } else {
        serde_json::json!({"thinking": {"type": "enabled", "budget_tokens": ask.budget}})
    }
}

/// Reasoning when a request does not say: `FAKE_REASONING` and `FAKE_REASONING_MAX_TOKENS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThinkingDefaults {
    pub enabled: bool,
    pub budget: u32,
}

impl Default for ThinkingDefaults {
    fn default() -> Self {
        ThinkingDefaults {
            enabled: true,
            budget: 4000,
        }
    }
}

impl ThinkingDefaults {
    /// The default budget, if reasoning is on by default.
    pub fn default_budget(self) -> Option<u32> {
        self.enabled.then_some(self.budget)
    }

    /// A budget for an effort word (OpenAI `reasoning_effort`, Anthropic `output_config.effort`):
    /// `none`/`minimal` → no reasoning, `low` → a quarter of the default budget (at least
    /// 1024), `medium` → the default, `high` → four times it, `xhigh`/`max` → eight times.
    /// Unknown words get the default.
    pub fn for_effort(self, effort: &str) -> Option<u32> {
        let b = self.budget.max(1);
        match effort.trim().to_ascii_lowercase().as_str() {
            "none" | "minimal" => None,
            "low" => Some((b / 4).max(1024)),
            "medium" => Some(b),
            "high" => Some(b.saturating_mul(4)),
            "xhigh" | "max" => Some(b.saturating_mul(8)),
            _ => Some(b),
        }
    }
}

/// The text the gateway adds to the system prompt to ask for reasoning: the two tags Claude
/// models understand, nothing more.
pub fn injection(budget: u32) -> String {
    format!("<thinking_mode>enabled</thinking_mode>\n<max_thinking_length>{budget}</max_thinking_length>")
}

/// A piece of parsed output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Reasoning(String),
    Answer(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// at the start of the answer: is it a tag?
    Start,
    /// inside the block, looking for this closing tag
    Thinking(&'static str),
    /// just after the closing tag: dropping whitespace
    AfterClose,
    /// the answer proper
    Answer,
}

/// See the module docs.
#[derive(Debug)]
pub struct ThinkingParser {
    state: State,
    buf: String,
}

impl Default for ThinkingParser {
    fn default() -> Self {
        Self::new()
    }
}

/// The largest byte index `<= i` on a char boundary.
fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl ThinkingParser {
    pub fn new() -> Self {
        ThinkingParser {
            state: State::Start,
            buf: String::new(),
        }
    }

    /// Feed a chunk; pieces that can be emitted now go to `out`.
    pub fn push(&mut self, chunk: &str, out: &mut Vec<Piece>) {
        self.push_owned(chunk.to_owned(), out);
    }

    /// [`push`](Self::push) for a chunk the caller owns: once detection is over the chunk is
    /// handed on as it is, without copying.
    pub fn push_owned(&mut self, chunk: String, out: &mut Vec<Piece>) {
        if self.state == State::Answer && self.buf.is_empty() {
            if !chunk.is_empty() {
                out.push(Piece::Answer(chunk));
            }
            return;
        }
        let searched = self.buf.len();
        if self.buf.is_empty() {
            self.buf = chunk;
        } else {
            self.buf.push_str(&chunk);
        }
        self.drain(out, searched);
    }

    /// `searched`: bytes of `buf` already known not to hold the closing tag's start.
    fn drain(&mut self, out: &mut Vec<Piece>, mut searched: usize) {
        loop {
            match self.state {
                State::Start => {
                    let trimmed = self.buf.trim_start();
                    if trimmed.is_empty() {
                        return; // only whitespace so far
                    }
                    if let Some((open, close)) =
                        OPEN_TAGS.iter().find(|(o, _)| trimmed.starts_with(o))
                    {
                        let skip = self.buf.len() - trimmed.len() + open.len();
                        self.buf.drain(..skip);
                        self.state = State::Thinking(close);
                        searched = 0;
                        continue;
                    }
                    if OPEN_TAGS.iter().any(|(o, _)| o.starts_with(trimmed)) {
                        return; // could still become a tag
                    }
                    self.state = State::Answer;
                }
                State::Thinking(close) => {
                    // only the new text (and the held tail before it) can hold the tag
                    let from = floor_boundary(&self.buf, searched.saturating_sub(close.len() - 1));
                    if let Some(pos) = self.buf[from..].find(close).map(|p| p + from) {
                        let reasoning: String = self.buf[..pos].to_owned();
                        self.buf.drain(..pos + close.len());
                        if !reasoning.is_empty() {
                            out.push(Piece::Reasoning(reasoning));
                        }
                        self.state = State::AfterClose;
                        continue;
                    }
                    // keep the tail that could be the start of a split closing tag
                    let keep_from =
                        floor_boundary(&self.buf, self.buf.len().saturating_sub(close.len() - 1));
                    if keep_from > 0 {
                        let tail = self.buf.split_off(keep_from);
                        out.push(Piece::Reasoning(std::mem::replace(&mut self.buf, tail)));
                    }
                    return;
                }
                State::AfterClose => {
                    let trimmed_len = self.buf.trim_start().len();
                    let ws = self.buf.len() - trimmed_len;
                    self.buf.drain(..ws);
                    if self.buf.is_empty() {
                        return;
                    }
                    self.state = State::Answer;
                }
                State::Answer => {
                    if !self.buf.is_empty() {
                        out.push(Piece::Answer(std::mem::take(&mut self.buf)));
                    }
                    return;
                }
            }
        }
    }

    /// The answer ended: flush what is held.
    pub fn finish(&mut self, out: &mut Vec<Piece>) {
        let rest = std::mem::take(&mut self.buf);
        match self.state {
            State::Start | State::Answer => {
                if !rest.is_empty() {
                    out.push(Piece::Answer(rest));
                }
            }
            State::Thinking(_) => {
                tracing::debug!("the thinking block was not closed; emitted as reasoning");
                if !rest.is_empty() {
                    out.push(Piece::Reasoning(rest));
                }
            }
            State::AfterClose => {}
        }
        self.state = State::Answer;
    }
}

/// Reasoning in the answer: the parser over a Kiro event stream (see the module docs).
/// Native reasoning events under `FAKE_REASONING_HANDLING`: `remove` drops them, `strip_tags`
/// turns the reasoning text into answer text, `pass` into answer text inside `<thinking>` tags;
/// `as_reasoning_content` leaves them as they are.
pub fn handle_native(events: KiroEvents, mode: ThinkingMode) -> KiroEvents {
    use futures_util::StreamExt;
    if mode == ThinkingMode::AsReasoningContent {
        return events;
    }
    let mut open = false;
    Box::pin(events.flat_map(move |item| {
        let out: Vec<Result<Event, crate::kiro::Error>> = match item {
            Ok(Event::Reasoning { text, .. }) => match mode {
                ThinkingMode::Remove | ThinkingMode::AsReasoningContent => Vec::new(),
                ThinkingMode::StripTags => vec![Ok(Event::Text { content: text })],
                ThinkingMode::Pass => {
                    let mut content = String::new();
                    if !open && !text.is_empty() {
                        open = true;
                        content.push_str("<thinking>");
                    }
                    content.push_str(&text);
                    vec![Ok(Event::Text { content })]
                }
            },
            Ok(Event::RedactedReasoning { .. }) => Vec::new(),
            Ok(ev @ (Event::Text { .. } | Event::ToolUse(_))) if open => {
                open = false;
                vec![
                    Ok(Event::Text {
                        content: "</thinking>\n\n".into(),
                    }),
                    Ok(ev),
                ]
            }
            other => vec![other],
        };
        futures_util::stream::iter(out)
    }))
}

pub fn split_thinking(events: KiroEvents, mode: ThinkingMode) -> KiroEvents {
    if mode == ThinkingMode::Pass {
        return events;
    }
    Box::pin(ThinkingStream {
        inner: events,
        parser: ThinkingParser::new(),
        mode,
        queue: VecDeque::new(),
        pieces: Vec::new(),
        reasoning_seen: false,
        answer_started: false,
        done: false,
    })
}

struct ThinkingStream {
    inner: KiroEvents,
    parser: ThinkingParser,
    mode: ThinkingMode,
    queue: VecDeque<Result<Event, crate::kiro::Error>>,
    pieces: Vec<Piece>,
    reasoning_seen: bool,
    answer_started: bool,
    done: bool,
}

impl ThinkingStream {
    fn emit_pieces(&mut self) {
        for p in self.pieces.drain(..) {
            match p {
                Piece::Reasoning(text) => {
                    self.reasoning_seen = true;
                    match self.mode {
                        ThinkingMode::AsReasoningContent => {
                            self.queue.push_back(Ok(Event::Reasoning {
                                text,
                                signature: None,
                            }))
                        }
                        ThinkingMode::StripTags => {
                            self.queue.push_back(Ok(Event::Text { content: text }))
                        }
                        ThinkingMode::Remove | ThinkingMode::Pass => {}
                    }
                }
                Piece::Answer(mut text) => {
                    if !self.answer_started
                        && self.reasoning_seen
                        && self.mode == ThinkingMode::StripTags
                    {
                        text.insert_str(0, "\n\n");
                    }
                    self.answer_started = true;
                    self.queue.push_back(Ok(Event::Text { content: text }));
                }
            }
        }
    }
}

impl Stream for ThinkingStream {
    type Item = Result<Event, crate::kiro::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.queue.pop_front() {
                return Poll::Ready(Some(item));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(Event::Text { content }))) => {
                    this.parser.push_owned(content, &mut this.pieces);
                    this.emit_pieces();
                }
                Poll::Ready(Some(Ok(other))) => {
                    // a tool call or the closing events end the text: flush what is held first
                    if matches!(other, Event::ToolUse(_)) || other.is_end_marker() {
                        this.parser.finish(&mut this.pieces);
                        this.emit_pieces();
                    }
                    this.queue.push_back(Ok(other));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.parser.finish(&mut this.pieces);
                    this.emit_pieces();
                    this.queue.push_back(Err(e));
                    this.done = true;
                }
                Poll::Ready(None) => {
                    this.parser.finish(&mut this.pieces);
                    this.emit_pieces();
                    this.done = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&str]) -> (String, String) {
        let mut p = ThinkingParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.push(c, &mut out);
        }
        p.finish(&mut out);
        let mut reasoning = String::new();
        let mut answer = String::new();
        for piece in out {
            match piece {
                Piece::Reasoning(r) => reasoning.push_str(&r),
                Piece::Answer(a) => answer.push_str(&a),
            }
        }
        (reasoning, answer)
    }

    #[test]
    fn every_split_point_gives_the_same_output() {
        let transcript = "  \n<thinking>Let me think: 2 < 3 and </thinkin is not a tag. é日😀</thinking>\n\n  The answer is <thinking>42</thinking>.";
        let want = (
            "Let me think: 2 < 3 and </thinkin is not a tag. é日😀".to_owned(),
            "The answer is <thinking>42</thinking>.".to_owned(),
        );
        let bounds: Vec<usize> = (0..=transcript.len())
            .filter(|i| transcript.is_char_boundary(*i))
            .collect();
        for &a in &bounds {
            assert_eq!(
                run(&[&transcript[..a], &transcript[a..]]),
                want,
                "split at {a}"
            );
            for &b in bounds.iter().filter(|b| **b > a).step_by(7) {
                assert_eq!(
                    run(&[&transcript[..a], &transcript[a..b], &transcript[b..]]),
                    want,
                    "splits at {a},{b}"
                );
            }
        }
        // one character at a time
        let singles: Vec<String> = transcript.chars().map(String::from).collect();
        let refs: Vec<&str> = singles.iter().map(String::as_str).collect();
        assert_eq!(run(&refs), want);
    }

    #[test]
    fn tag_like_text_later_in_the_answer_is_left_alone() {
        assert_eq!(
            run(&["Sure: ", "<thinking>x</thinking>"]),
            (String::new(), "Sure: <thinking>x</thinking>".into())
        );
        assert_eq!(
            run(&["<thi", "s is html>"]),
            (String::new(), "<this is html>".into())
        );
        assert_eq!(
            run(&["<", "b>bold</b>"]),
            (String::new(), "<b>bold</b>".into())
        );
    }

    #[test]
    fn an_effort_goes_natively_as_adaptive_where_the_schema_takes_it() {
        use serde_json::json;
        let defaults = ThinkingDefaults::default();
        let full = json!({"type": "object", "properties": {
            "thinking": {"type": "object", "properties": {
                "type": {"enum": ["enabled", "adaptive", "disabled"]},
                "budget_tokens": {"type": "integer", "minimum": 1024, "maximum": 32000}}},
            "output_config": {"type": "object", "properties": {
                "effort": {"enum": ["low", "medium", "high", "max"]}}}}});
        let effort = |e: &str| ReasoningAsk {
            budget: defaults.for_effort(e).unwrap_or(defaults.budget),
            adaptive: false,
            effort: Some(e.into()),
        };
        // an effort (OpenAI, Responses, Anthropic without `thinking`): adaptive + effort
        assert_eq!(
            native_fields(&full, &effort("high"), defaults),
            Some(json!({"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}}))
        );
        // xhigh is between high and max: the stronger wins
        assert_eq!(
            native_fields(&full, &effort("xhigh"), defaults),
            Some(json!({"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}))
        );
        // a budget request keeps enabled with its (clamped) budget
        assert_eq!(
            native_fields(&full, &ReasoningAsk::budget(50_000), defaults),
            Some(json!({"thinking": {"type": "enabled", "budget_tokens": 32000}}))
        );
        // no output_config.effort in the schema: the effort's budget, as before
        let no_effort = json!({"type": "object", "properties": {
            "thinking": {"type": "object", "properties": {
                "type": {"enum": ["enabled", "adaptive"]}}}}});
        assert_eq!(
            native_fields(&no_effort, &effort("high"), defaults),
            Some(json!({"thinking": {"type": "enabled", "budget_tokens": 16000}}))
        );
    }

    #[test]
    fn passes_text_through_at_once_when_it_is_not_a_tag() {
        let mut p = ThinkingParser::new();
        let mut out = Vec::new();
        p.push("Hello", &mut out);
        assert_eq!(out, vec![Piece::Answer("Hello".into())]);
    }

    #[test]
    fn other_tag_names_and_unclosed_blocks() {
        assert_eq!(run(&["<think>a</think>b"]), ("a".into(), "b".into()));
        assert_eq!(
            run(&["<reasoning>a", "</reason", "ing> b"]),
            ("a".into(), "b".into())
        );
        assert_eq!(
            run(&["<thinking>never closed"]),
            ("never closed".into(), String::new())
        );
        assert_eq!(run(&["   "]), (String::new(), "   ".into()));
        assert_eq!(run(&[""]), (String::new(), String::new()));
    }

    #[test]
    fn reasoning_streams_while_the_block_is_open() {
        let mut p = ThinkingParser::new();
        let mut out = Vec::new();
        p.push("<thinking>step one, step two", &mut out);
        // all but the last few characters (a possible split closing tag) are out already
        let emitted: String = out
            .iter()
            .map(|x| match x {
                Piece::Reasoning(r) => r.as_str(),
                Piece::Answer(_) => "",
            })
            .collect();
        // (the last len("</thinking>") - 1 = 10 characters are held back)
        assert_eq!(emitted, "step one");
    }
}

/// Signatures the gateway puts on the thinking blocks it produces, so it can recognise them
/// when a client sends them back: `kgw1_` and the first 32 hex digits of a SHA-256 over the
/// text. Not a secret, only a recognisable fingerprint.
#[derive(Clone, Default)]
pub struct Signer(sha2::Sha256);

const SIGNATURE_PREFIX: &str = "kgw1_";

impl Signer {
    pub fn new() -> Self {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"kiro-gateway thinking v1\n");
        Signer(h)
    }

    pub fn update(&mut self, text: &str) {
        use sha2::Digest;
        self.0.update(text.as_bytes());
    }

    pub fn finish(self) -> String {
        use sha2::Digest;
        let digest = self.0.finalize();
        let hex = crate::kiro::client::hex(&digest);
        format!("{SIGNATURE_PREFIX}{}", &hex[..32])
    }
}

/// The signature of a whole thinking text.
pub fn sign(text: &str) -> String {
    let mut s = Signer::new();
    s.update(text);
    s.finish()
}

/// Whether `signature` is the gateway's own for `text`.
pub fn is_own_signature(text: &str, signature: &str) -> bool {
    signature.starts_with(SIGNATURE_PREFIX) && sign(text) == signature
}

#[cfg(test)]
mod signature_tests {
    use super::*;

    #[test]
    fn recognises_its_own_signatures_only() {
        let sig = sign("because 2 > 1");
        assert!(sig.starts_with("kgw1_"));
        assert!(is_own_signature("because 2 > 1", &sig));
        assert!(!is_own_signature("because 2 > 0", &sig));
        assert!(!is_own_signature("x", "EqQBCgIYAhIM-anthropic-signature"));
        let mut s = Signer::new();
        s.update("because ");
        s.update("2 > 1");
        assert_eq!(s.finish(), sig, "incremental signing agrees");
    }
}
