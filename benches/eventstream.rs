//! Decode throughput of the event-stream decoder plus typed-event parsing, on a realistic
//! 200-frame answer (text deltas, a tool call, the closing events), fed as one chunk and as
//! random TCP-sized pieces.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kiro_gateway::kiro::events::frame_to_event;
use kiro_gateway::kiro::eventstream::Decoder;
use kiro_gateway::mock::Script;
use rand::{Rng, SeedableRng};

fn realistic_stream() -> (Bytes, usize) {
    let sentence = "The quick brown fox jumps over the lazy dog, café 日本 ";
    let mut script = Script::new().metadata();
    // 190 text deltas of ~25 characters
    for i in 0..190 {
        let s: String = sentence.chars().cycle().skip(i % 7).take(25).collect();
        script = script.event(kiro_gateway::mock::MockEvent::Text(s));
    }
    let script = script
        .tool_call(
            "tooluse_bench",
            "write_file",
            r#"{"path":"/tmp/a.txt","content":"hello\nworld"}"#,
        )
        .end();
    let frames = script.frames();
    let n = frames.len();
    let mut all = BytesMut::new();
    for f in frames {
        all.extend_from_slice(&f);
    }
    (all.freeze(), n)
}

fn decode(chunks: &[Bytes]) -> usize {
    let mut d = Decoder::new();
    let mut events = 0;
    for c in chunks {
        d.push(c);
        while let Ok(Some(f)) = d.next_frame() {
            if frame_to_event(f).is_ok() {
                events += 1;
            }
        }
    }
    events
}

fn bench(c: &mut Criterion) {
    let (stream, frames) = realistic_stream();
    let one = vec![stream.clone()];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut split = Vec::new();
    let mut rest = stream.clone();
    while !rest.is_empty() {
        let n = rng.random_range(1..=1500).min(rest.len());
        split.push(rest.split_to(n));
    }
    assert_eq!(decode(&one), frames);
    assert_eq!(decode(&split), frames);

    let mut g = c.benchmark_group(format!("eventstream_{frames}_frames"));
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("bytes/one_chunk", |b| b.iter(|| decode(&one)));
    g.bench_function("bytes/random_splits", |b| b.iter(|| decode(&split)));
    g.bench_function("bytes/frames_only", |b| {
        b.iter(|| {
            let mut d = Decoder::new();
            let mut n = 0;
            for c in &split {
                d.push(c);
                while let Ok(Some(_)) = d.next_frame() {
                    n += 1;
                }
            }
            n
        })
    });
    g.throughput(Throughput::Elements(frames as u64));
    g.bench_function("frames/random_splits", |b| b.iter(|| decode(&split)));
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
