//! Translation costs: dialect request → Kiro request (a small chat and a Claude Code-sized
//! request), Kiro events → SSE for a 200-chunk answer with a tool call, and the thinking parser
//! on its own over the same 200 chunks (to show what share of the stream path it costs).
//!
//! `request_with_tool_calls/{1000,10000,100000}`: one assistant turn with that many tool calls,
//! then their results (about 140 bytes a pair: 100 000 of them are a 14 MB body). Every pass
//! over a request must be linear: the per-element time stays flat across the three sizes, and
//! before the benches run, `assert_linear_growth` checks that ten times the calls cost less
//! than 30 times the time (a quadratic pass costs about 100 times).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kiro_gateway::api::anthropic::{AnthropicMessages, MessagesEncoder, MessagesRequest};
use kiro_gateway::api::openai::{ChatCompletionRequest, ChatEncoder, OpenAiChat};
use kiro_gateway::api::thinking::{Piece, ThinkingParser};
use kiro_gateway::api::usage::UsageTracker;
use kiro_gateway::api::{Encoder, End, ResponseMeta};
use kiro_gateway::kiro::{Event, ToolInput, ToolUseEvent};
use kiro_gateway::layers::translate::{prepare, TranslateConfig};
use kiro_gateway::models::ResolvedModel;
use serde_json::json;

fn resolved() -> ResolvedModel {
    ResolvedModel {
        requested: "claude-sonnet-4-5".into(),
        kiro_id: "claude-sonnet-4.5".into(),
        max_input_tokens: 200_000,
        reasoning_schema: None,
    }
}

fn small_openai() -> ChatCompletionRequest {
    serde_json::from_value(json!({"model": "claude-sonnet-4-5", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the capital of France?"}]}))
    .unwrap()
}

/// 20 tools, 40 turns with tool calls and results, long system blocks.
fn claude_code_sized() -> MessagesRequest {
    let tools: Vec<_> = (0..20)
        .map(|i| json!({"name": format!("tool_{i}"), "description": "Does a thing. ".repeat(40),
            "input_schema": {"type": "object", "properties": {"path": {"type": "string"}, "n": {"type": "integer"}},
                             "required": ["path"], "additionalProperties": false}}))
        .collect();
    let mut messages = Vec::new();
    for i in 0..20 {
        messages.push(json!({"role": "user", "content": if i == 0 {
            json!("Refactor the module and run the tests.")
        } else {
            json!([{"type": "tool_result", "tool_use_id": format!("toolu_{}", i - 1), "content": "ok\n".repeat(50)}])
        }}));
        messages.push(json!({"role": "assistant", "content": [
            {"type": "text", "text": "Working on it. ".repeat(10)},
            {"type": "tool_use", "id": format!("toolu_{i}"), "name": format!("tool_{}", i % 20), "input": {"path": "/src/lib.rs", "n": i}}]}));
    }
    messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_19", "content": "done"}]}));
    serde_json::from_value(json!({"model": "claude-sonnet-4-5", "max_tokens": 64000,
        "system": [{"type": "text", "text": "You are Claude Code. ".repeat(400), "cache_control": {"type": "ephemeral"}}],
        "tools": tools, "messages": messages}))
    .unwrap()
}

/// An OpenAI request with `n` tool calls in one assistant turn, each answered by a tool message.
fn tool_calls_openai(n: usize) -> ChatCompletionRequest {
    let mut messages = vec![json!({"role": "user", "content": "Run every check."})];
    let calls: Vec<_> = (0..n)
        .map(|i| {
            json!({"id": format!("call_{i:06}"), "type": "function",
            "function": {"name": "check", "arguments": format!("{{\"n\":{i}}}")}})
        })
        .collect();
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": calls}));
    for i in 0..n {
        messages
            .push(json!({"role": "tool", "tool_call_id": format!("call_{i:06}"), "content": "ok"}));
    }
    serde_json::from_value(json!({"model": "claude-sonnet-4-5", "messages": messages,
        "tools": [{"type": "function", "function": {"name": "check", "description": "Runs a check.",
            "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}}}}]}))
    .unwrap()
}

/// Ten times the tool calls must cost well under a hundred times the time (best of three,
/// so a busy machine does not make a linear pass look quadratic).
fn assert_linear_growth(cfg: &TranslateConfig) {
    let best = |n: usize| {
        let req = tool_calls_openai(n);
        (0..3)
            .map(|_| {
                let t0 = tokio::time::Instant::now();
                let len = prepare::<OpenAiChat>(&req, &resolved(), cfg)
                    .unwrap()
                    .body
                    .len();
                assert!(len > n * 50);
                t0.elapsed()
            })
            .min()
            .unwrap()
    };
    let (small, large) = (best(10_000), best(100_000));
    let ratio = large.as_secs_f64() / small.as_secs_f64();
    eprintln!("tool calls: 10 000 in {small:?}, 100 000 in {large:?}: x{ratio:.1}");
    assert!(
        ratio < 30.0,
        "translation grows faster than linearly: 10x the tool calls took {ratio:.1}x the time"
    );
}

fn meta() -> ResponseMeta {
    ResponseMeta {
        id: "id".into(),
        created: 0,
        model: "claude-sonnet-4-5".into(),
        usage: UsageTracker::new(100, 200_000),
    }
}

/// 200 chunks: 40 of thinking, 150 of answer text, then a tool call in 10 fragments.
fn answer_chunks() -> Vec<String> {
    let mut v = vec!["<thinking>".to_owned()];
    v.extend((0..39).map(|i| format!("reasoning step {i} about the problem. ")));
    v.push("</thinking>\n\n".to_owned());
    v.extend((0..149).map(|i| format!("Answer sentence number {i}, with é. ")));
    v
}

fn events() -> Vec<Event> {
    let mut ev: Vec<Event> = answer_chunks()
        .into_iter()
        .skip(41)
        .map(|c| Event::Text { content: c })
        .collect();
    ev.push(Event::ToolUse(ToolUseEvent {
        tool_use_id: "t".into(),
        name: "write".into(),
        input: ToolInput::None,
        stop: false,
    }));
    for i in 0..9 {
        ev.push(Event::ToolUse(ToolUseEvent {
            tool_use_id: "t".into(),
            name: "write".into(),
            input: ToolInput::Fragment(format!("{{\"k{i}\":\"v\\\"{i}\"")),
            stop: false,
        }));
    }
    ev
}

fn encode<E: Encoder>(mut e: E, events: &[Event]) -> usize {
    let mut out: Vec<Bytes> = Vec::new();
    for ev in events {
        e.on_event(ev.clone(), &mut out);
    }
    e.on_end(End::Complete, &mut out);
    out.iter().map(Bytes::len).sum()
}

/// Returns the pieces so that freeing them (work the encoder does in the gateway) happens
/// outside the measurement.
fn parse(chunks: Vec<String>) -> Vec<Piece> {
    let mut p = ThinkingParser::new();
    let mut out: Vec<Piece> = Vec::with_capacity(chunks.len());
    for c in chunks {
        p.push_owned(c, &mut out);
    }
    p.finish(&mut out);
    out
}

/// The same 200-chunk answer (thinking, text, a tool call) as Kiro sends it on the wire.
fn wire_frames() -> Bytes {
    use kiro_gateway::mock::{MockEvent, Script};
    let mut s = Script::new();
    for c in answer_chunks() {
        s = s.event(MockEvent::Text(c));
    }
    let s = s
        .tool_call("t", "write", r#"{"k0":"v\"0","k1":"v\"1"}"#)
        .end();
    let mut all = bytes::BytesMut::new();
    for f in s.frames() {
        all.extend_from_slice(&f);
    }
    all.freeze()
}

/// The whole stream translation: decode frames, type events, split thinking, encode SSE.
fn stream_path(wire: &Bytes) -> usize {
    use kiro_gateway::kiro::events::frame_to_event;
    use kiro_gateway::kiro::eventstream::Decoder;
    let mut d = Decoder::new();
    let mut parser = ThinkingParser::new();
    let mut enc = ChatEncoder::new(meta(), true);
    let mut pieces = Vec::new();
    let mut out: Vec<Bytes> = Vec::new();
    d.push(wire);
    while let Ok(Some(f)) = d.next_frame() {
        match frame_to_event(f) {
            Ok(Event::Text { content }) => {
                parser.push_owned(content, &mut pieces);
                for p in pieces.drain(..) {
                    let ev = match p {
                        Piece::Reasoning(text) => Event::Reasoning {
                            text,
                            signature: None,
                        },
                        Piece::Answer(content) => Event::Text { content },
                    };
                    enc.on_event(ev, &mut out);
                }
            }
            Ok(ev) => enc.on_event(ev, &mut out),
            Err(_) => break,
        }
    }
    enc.on_end(End::Complete, &mut out);
    out.iter().map(Bytes::len).sum()
}

fn bench(c: &mut Criterion) {
    let cfg = TranslateConfig::default();
    let small = small_openai();
    let big = claude_code_sized();
    let mut g = c.benchmark_group("request_to_kiro");
    g.bench_function("openai_small_chat", |b| {
        b.iter(|| {
            prepare::<OpenAiChat>(&small, &resolved(), &cfg)
                .unwrap()
                .body
                .len()
        })
    });
    g.bench_function("anthropic_claude_code_20_tools_40_turns", |b| {
        b.iter(|| {
            prepare::<AnthropicMessages>(&big, &resolved(), &cfg)
                .unwrap()
                .body
                .len()
        })
    });
    g.finish();

    assert_linear_growth(&cfg);
    let mut g = c.benchmark_group("request_with_tool_calls");
    g.sample_size(10);
    for n in [1_000usize, 10_000, 100_000] {
        let req = tool_calls_openai(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(n.to_string(), |b| {
            b.iter(|| {
                prepare::<OpenAiChat>(&req, &resolved(), &cfg)
                    .unwrap()
                    .body
                    .len()
            })
        });
    }
    g.finish();

    let ev = events();
    let chunks = answer_chunks();
    let frames = wire_frames();
    let mut g = c.benchmark_group("events_to_sse_200_chunks");
    g.throughput(Throughput::Elements(200));
    g.bench_function("openai", |b| {
        b.iter(|| encode(ChatEncoder::new(meta(), true), &ev))
    });
    g.bench_function("anthropic", |b| {
        b.iter(|| encode(MessagesEncoder::new(meta()), &ev))
    });
    // the chunks are owned by the parser, as the upstream text events are in the gateway
    g.bench_function("thinking_parser_alone", |b| {
        b.iter_batched(|| chunks.clone(), parse, BatchSize::SmallInput)
    });
    g.bench_function("stream_path_frames_to_sse_with_thinking", |b| {
        b.iter(|| stream_path(&frames))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
