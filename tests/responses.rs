//! The OpenAI Responses API (`/v1/responses`): request conversion, the response object, the
//! event sequence, custom (freeform) tools, chaining through the store, and errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::{start, start_with, Running};
use kiro_gateway::mock::{Fault, MockEvent, Reply, Script};
use serde_json::{json, Value};

async fn responses(r: &Running, body: Value) -> (u16, http::HeaderMap, Vec<u8>) {
    let (s, h, b) = r
        .send(r.req("POST", "/v1/responses", body.to_string()))
        .await;
    (s.as_u16(), h, b.to_vec())
}

/// `(event name, data)` pairs.
fn events(body: &[u8]) -> Vec<(String, Value)> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or_default()
                .to_owned();
            let data = e
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(|d| serde_json::from_str(d).unwrap())
                .unwrap_or(Value::Null);
            (name, data)
        })
        .collect()
}

const NO_REASONING: &str = "none";

#[tokio::test]
async fn a_plain_request_gets_a_complete_response_object() {
    let r = start().await;
    r.mock
        .push_reply(Reply::Stream(Script::text("Hello there", 4)));
    let (s, _, b) = responses(
        &r,
        json!({"model": "claude-sonnet-4-5", "input": "Hi", "instructions": "Be brief.",
               "reasoning": {"effort": NO_REASONING}, "metadata": {"k": "v"}}),
    )
    .await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "claude-sonnet-4-5");
    assert_eq!(v["metadata"], json!({"k": "v"}));
    assert_eq!(v["output"].as_array().unwrap().len(), 1);
    let m = &v["output"][0];
    assert_eq!(m["type"], "message");
    assert_eq!(m["role"], "assistant");
    assert!(m["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        m["content"][0],
        json!({"type": "output_text", "text": "Hello there", "annotations": []})
    );
    let u = &v["usage"];
    assert!(u["input_tokens"].is_u64() && u["output_tokens"].is_u64());
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["input_tokens"].as_u64().unwrap() + u["output_tokens"].as_u64().unwrap()
    );
    assert!(
        u.get("input_tokens_details").is_none(),
        "no cache figure was reported"
    );
    assert_eq!(u["output_tokens_details"]["reasoning_tokens"], 0);
    // the instructions became the system prompt
    let up = r.last_generate();
    assert!(up.to_string().contains("Be brief."));
}

#[tokio::test]
async fn the_stream_has_the_documented_sequence_with_sequence_numbers() {
    let r = start().await;
    r.mock.push_reply(Reply::Stream(
        Script::new()
            .metadata()
            .text_deltas("Let me look.", 6)
            .tool_call("tooluse_1", "read_file", r#"{"path":"a.txt"}"#)
            .end(),
    ));
    let (s, h, b) = responses(
        &r,
        json!({"model": "claude-sonnet-4-5", "input": "read a.txt", "stream": true,
               "reasoning": {"effort": NO_REASONING},
               "tools": [{"type": "function", "name": "read_file", "parameters": {"type": "object"}}]}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "text/event-stream");
    let ev = events(&b);
    for (i, (name, data)) in ev.iter().enumerate() {
        assert_eq!(data["sequence_number"], i, "{name}");
        assert_eq!(data["type"], name.as_str());
    }
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    let mut dedup = names.clone();
    dedup.dedup();
    assert_eq!(
        dedup,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let args: String = ev
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(args, r#"{"path":"a.txt"}"#);
    assert!(
        names
            .iter()
            .filter(|n| **n == "response.function_call_arguments.delta")
            .count()
            > 1,
        "fragments are forwarded as they arrive"
    );
    let done = &ev.last().unwrap().1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][1]["type"], "function_call");
    assert_eq!(done["output"][1]["call_id"], "tooluse_1");
    assert_eq!(done["output"][1]["arguments"], r#"{"path":"a.txt"}"#);
}

#[tokio::test]
async fn a_custom_tool_call_comes_back_with_its_raw_input() {
    let r = start().await;
    let patch = "*** Begin Patch\n*** Update File: a.txt\n-old\n+new \"q\"\n*** End Patch";
    let args = json!({"input": patch}).to_string();
    let body = |stream: bool| {
        json!({"model": "claude-sonnet-4-5", "stream": stream, "reasoning": {"effort": NO_REASONING},
               "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix it"}]}],
               "tools": [{"type": "custom", "name": "apply_patch", "description": "Apply a patch",
                          "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}]})
    };
    for stream in [false, true] {
        r.mock.push_reply(Reply::Stream(
            Script::new()
                .metadata()
                .tool_call("tooluse_p", "apply_patch", &args)
                .end(),
        ));
        let (s, _, b) = responses(&r, body(stream)).await;
        assert_eq!(s, 200);
        let v = if stream {
            let ev = events(&b);
            let deltas: String = ev
                .iter()
                .filter(|(n, _)| n == "response.custom_tool_call_input.delta")
                .map(|(_, d)| d["delta"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(deltas, patch);
            ev.last().unwrap().1["response"].clone()
        } else {
            serde_json::from_slice(&b).unwrap()
        };
        let item = &v["output"][0];
        assert_eq!(item["type"], "custom_tool_call", "{v}");
        assert_eq!(item["call_id"], "tooluse_p");
        assert_eq!(item["input"], patch);
    }
    // the tool went to Kiro as one string argument, its grammar in the description
    let up = r.last_generate();
    let tool = &up["conversationState"]["currentMessage"]["userInputMessage"]
        ["userInputMessageContext"]["tools"][0]["toolSpecification"];
    assert_eq!(
        tool["inputSchema"]["json"]["properties"]["input"]["type"],
        "string"
    );
    assert!(tool["description"]
        .as_str()
        .unwrap()
        .contains("start: /.+/"));
    // and a custom call sent back is a tool use with that argument
    r.mock.push_reply(Reply::Stream(Script::text("done", 4)));
    let mut b = body(false);
    b["input"] = json!([
        {"type": "message", "role": "user", "content": "fix it"},
        {"type": "custom_tool_call", "call_id": "tooluse_p", "name": "apply_patch", "input": patch},
        {"type": "custom_tool_call_output", "call_id": "tooluse_p", "output": "Done!"}]);
    let (s, _, _) = responses(&r, b).await;
    assert_eq!(s, 200);
    let up = r.last_generate();
    let uses = &up["conversationState"]["history"][1]["assistantResponseMessage"]["toolUses"];
    assert_eq!(uses[0]["input"], json!({"input": patch}));
}

#[tokio::test]
async fn function_call_outputs_pair_with_their_calls_even_when_grouped() {
    let r = start().await;
    r.mock
        .push_reply(Reply::Stream(Script::text("Both read.", 4)));
    let (s, _, b) = responses(
        &r,
        json!({"model": "claude-sonnet-4-5", "reasoning": {"effort": NO_REASONING},
               "tools": [{"type": "function", "name": "read_file", "parameters": {"type": "object"}}],
               "input": [
                   {"role": "user", "content": "read a and b"},
                   {"type": "reasoning", "summary": [], "encrypted_content": null},
                   {"type": "function_call", "call_id": "c1", "name": "read_file", "arguments": "{\"path\":\"a\"}"},
                   {"type": "function_call", "call_id": "c2", "name": "read_file", "arguments": "{\"path\":\"b\"}"},
                   {"type": "function_call_output", "call_id": "c1", "output": "A"},
                   {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "B"}]},
                   {"type": "additional_tools", "role": "developer", "tools": []}]}),
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let up = r.last_generate();
    let h = &up["conversationState"]["history"];
    let uses = h[1]["assistantResponseMessage"]["toolUses"]
        .as_array()
        .unwrap();
    assert_eq!(uses.len(), 2);
    let results = &up["conversationState"]["currentMessage"]["userInputMessage"]
        ["userInputMessageContext"]["toolResults"];
    assert_eq!(results[0]["toolUseId"], "c1");
    assert_eq!(results[1]["content"][0]["text"], "B");
}

#[tokio::test]
async fn previous_response_id_chains_and_get_returns_a_kept_response() {
    let r = start().await;
    r.mock
        .push_reply(Reply::Stream(Script::text("The capital is Paris.", 5)));
    let (_, _, b) = responses(
        &r,
        json!({"model": "claude-sonnet-4-5", "input": "Capital of France?", "reasoning": {"effort": NO_REASONING}}),
    )
    .await;
    let first: Value = serde_json::from_slice(&b).unwrap();
    let id = first["id"].as_str().unwrap().to_owned();
    // GET gives the same object
    let (s, _, got) = r
        .send(r.req("GET", &format!("/v1/responses/{id}"), ""))
        .await;
    assert_eq!(s, 200);
    assert_eq!(serde_json::from_slice::<Value>(&got).unwrap(), first);
    // a follow-up carries the earlier turns
    r.mock
        .push_reply(Reply::Stream(Script::text("About 2 million.", 5)));
    let (s, _, _) = responses(
        &r,
        json!({"model": "claude-sonnet-4-5", "input": "Its population?", "previous_response_id": id,
               "stream": true, "reasoning": {"effort": NO_REASONING}}),
    )
    .await;
    assert_eq!(s, 200);
    let up = r.last_generate();
    let h = &up["conversationState"]["history"];
    assert!(h[0]["userInputMessage"]["content"]
        .as_str()
        .unwrap()
        .contains("Capital of France?"));
    assert_eq!(
        h[1]["assistantResponseMessage"]["content"],
        "The capital is Paris."
    );
    assert_eq!(
        up["conversationState"]["currentMessage"]["userInputMessage"]["content"],
        "Its population?"
    );
    // an unknown id is a 404 in OpenAI's shape, before anything goes upstream
    let calls = r.mock.generate_calls();
    let (s, _, b) = responses(
        &r,
        json!({"model": "claude-sonnet-4-5", "input": "x", "previous_response_id": "resp_nope"}),
    )
    .await;
    assert_eq!(s, 404);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["error"]["code"], "previous_response_not_found");
    assert_eq!(v["error"]["param"], "previous_response_id");
    assert_eq!(r.mock.generate_calls(), calls);
    let (s, _, b) = r.send(r.req("GET", "/v1/responses/resp_nope", "")).await;
    assert_eq!(s, 404);
    assert_eq!(
        serde_json::from_slice::<Value>(&b).unwrap()["error"]["code"],
        "response_not_found"
    );
}

#[tokio::test]
async fn store_false_keeps_nothing() {
    let r = start().await;
    r.mock.push_reply(Reply::Stream(Script::text("ok", 2)));
    let (_, _, b) = responses(
        &r,
        json!({"model": "claude-sonnet-4-5", "input": "hi", "store": false, "reasoning": {"effort": NO_REASONING}}),
    )
    .await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["store"], false);
    let (s, _, _) = r
        .send(r.req(
            "GET",
            &format!("/v1/responses/{}", v["id"].as_str().unwrap()),
            "",
        ))
        .await;
    assert_eq!(s, 404);
    assert!(r.gateway.parts.translate.responses.is_empty());
}

#[tokio::test]
async fn the_store_is_bounded() {
    let r = start_with(Default::default(), |c| c.responses_store_max = 2).await;
    for _ in 0..5 {
        r.mock.push_reply(Reply::Stream(Script::text("ok", 2)));
        responses(&r, json!({"model": "claude-sonnet-4-5", "input": "hi"})).await;
    }
    assert_eq!(r.gateway.parts.translate.responses.len(), 2);
}

#[tokio::test]
async fn a_cut_answer_is_incomplete_and_a_failure_is_failed_never_completed() {
    let r = start().await;
    r.mock.push_reply(Reply::Stream(
        Script::new()
            .metadata()
            .text_deltas("A long", 3)
            .event(MockEvent::Exception {
                kind: "ContentLengthExceededException".into(),
                message: "too long".into(),
            }),
    ));
    let (_, _, b) = responses(
        &r,
        json!({"model": "claude-sonnet-4-5", "input": "hi", "stream": true}),
    )
    .await;
    let ev = events(&b);
    let last = &ev.last().unwrap();
    assert_eq!(last.0, "response.incomplete");
    assert_eq!(
        last.1["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );

    for fault in [
        Fault::ResetAt(3),
        Fault::BadCrcAt(3),
        Fault::ExceptionAt {
            frame: 3,
            kind: "ThrottlingException".into(),
            message: "Rate exceeded".into(),
        },
    ] {
        r.mock.push_reply(Reply::Stream(
            Script::text("partial answer here", 3).fault(fault.clone()),
        ));
        let (s, _, b) = responses(
            &r,
            json!({"model": "claude-sonnet-4-5", "input": "hi", "stream": true}),
        )
        .await;
        assert_eq!(s, 200);
        let ev = events(&b);
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.last(), Some(&"response.failed"), "{fault:?}");
        assert!(!names.contains(&"response.completed"), "{fault:?}");
        let failed = &ev.last().unwrap().1["response"];
        assert_eq!(failed["status"], "failed");
        assert!(failed["error"]["code"].is_string());
        assert!(failed["output"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["status"] != "completed"));
    }
    // throttling mid-stream is reported with the code Codex retries on
    r.mock
        .push_reply(Reply::Stream(Script::text("partial answer here", 3).fault(
            Fault::ExceptionAt {
                frame: 3,
                kind: "ThrottlingException".into(),
                message: "Rate exceeded".into(),
            },
        )));
    let (_, _, b) = responses(
        &r,
        json!({"model": "claude-sonnet-4-5", "input": "hi", "stream": true}),
    )
    .await;
    assert_eq!(
        events(&b).last().unwrap().1["response"]["error"]["code"],
        "rate_limit_exceeded"
    );
}

#[tokio::test]
async fn reasoning_becomes_a_reasoning_item_with_its_summary() {
    let r = start().await;
    r.mock.push_reply(Reply::Stream(Script::text(
        "<thinking>2 < 3.</thinking>Yes.",
        4,
    )));
    let (_, _, b) = responses(
        &r,
        json!({"model": "claude-sonnet-4-5", "input": "2<3?", "reasoning": {"effort": "high", "summary": "auto"}}),
    )
    .await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["output"][0]["type"], "reasoning");
    assert!(v["output"][0]["id"].as_str().unwrap().starts_with("rs_"));
    assert_eq!(
        v["output"][0]["summary"][0],
        json!({"type": "summary_text", "text": "2 < 3."})
    );
    assert_eq!(v["output"][1]["content"][0]["text"], "Yes.");
    assert!(
        v["usage"]["output_tokens_details"]["reasoning_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    // effort high asked for a larger budget than the default
    assert!(r
        .last_generate()
        .to_string()
        .contains("<max_thinking_length>16000"));
}

#[tokio::test]
async fn errors_are_openai_shaped() {
    let r = start().await;
    for body in [
        json!({"model": "claude-sonnet-4-5", "input": 5}),
        json!({"input": "no model"}),
        json!({"model": "claude-sonnet-4-5", "input": []}),
        json!({"model": "claude-sonnet-4-5", "input": [{"type": "function_call", "name": "f"}]}),
    ] {
        let (s, _, b) = responses(&r, body.clone()).await;
        assert_eq!(s, 400, "{body}");
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{body}");
    }
    let mut req = r.req("POST", "/v1/responses", "{}");
    req.headers_mut().remove("authorization");
    let (s, _, b) = r.send(req).await;
    assert_eq!(s, 401);
    assert_eq!(
        serde_json::from_slice::<Value>(&b).unwrap()["error"]["type"],
        "authentication_error"
    );
    for (method, key) in [("POST", true), ("GET", true), ("GET", false)] {
        let mut req = r.req(method, "/v1/responses", "");
        if !key {
            req.headers_mut().remove("authorization");
        }
        let h = req.headers_mut();
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("connection", "upgrade".parse().unwrap());
        h.insert("sec-websocket-version", "13".parse().unwrap());
        let (s, _, _) = r.send(req).await;
        assert_eq!(s, if key { 426 } else { 401 }, "{method} {key}");
    }
    assert_eq!(r.mock.generate_calls(), 0);
}

#[tokio::test]
async fn a_streaming_client_gets_failures_it_can_act_on_as_response_failed() {
    let r = start().await;
    // throttled on every attempt: rate_limit_exceeded with the wait in the message
    for _ in 0..5 {
        r.mock.push_reply(Reply::Status {
            status: 429,
            body: r#"{"message":"Rate exceeded","reason":"USER_REQUEST_RATE_EXCEEDED","retryAfterMilliseconds":600}"#.into(),
        });
    }
    let (s, _, b) = responses(
        &r,
        json!({"model": "claude-sonnet-4-5", "input": "hi", "stream": true}),
    )
    .await;
    assert_eq!(s, 200);
    let ev = events(&b);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.failed"
        ]
    );
    let err = &ev[2].1["response"]["error"];
    assert_eq!(err["code"], "rate_limit_exceeded");
    assert!(
        err["message"].as_str().unwrap().contains("try again in 1s"),
        "{err}"
    );
    // too long: context_length_exceeded (Codex compacts on it); non-stream keeps the HTTP 400
    let big: String = "x".repeat(700_000);
    let (s, _, b) = responses(
        &r,
        json!({"model": "claude-sonnet-4-5", "input": big, "stream": true}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        events(&b).last().unwrap().1["response"]["error"]["code"],
        "context_length_exceeded"
    );
    let (s, _, b) = responses(&r, json!({"model": "claude-sonnet-4-5", "input": big})).await;
    assert_eq!(s, 400);
    assert_eq!(
        serde_json::from_slice::<Value>(&b).unwrap()["error"]["code"],
        "context_length_exceeded"
    );
    // a bad request stays a 400 even when streaming
    let (s, _, _) = responses(
        &r,
        json!({"model": "claude-sonnet-4-5", "input": 5, "stream": true}),
    )
    .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn a_tool_call_cut_short_makes_the_response_incomplete() {
    let r = start().await;
    for stream in [false, true] {
        r.mock.push_reply(Reply::Stream(
            Script::new()
                .metadata()
                .tool_call(
                    "tooluse_cut",
                    "write_file",
                    r#"{"path":"a.txt","text":"cut mid-str"#,
                )
                .end(),
        ));
        let (s, _, b) = responses(
            &r,
            json!({"model": "claude-sonnet-4-5", "input": "go", "stream": stream,
                   "reasoning": {"effort": NO_REASONING},
                   "tools": [{"type": "function", "name": "write_file", "parameters": {"type": "object"}}]}),
        )
        .await;
        assert_eq!(s, 200);
        let v = if stream {
            let ev = events(&b);
            assert_eq!(ev.last().unwrap().0, "response.incomplete");
            ev.last().unwrap().1["response"].clone()
        } else {
            serde_json::from_slice(&b).unwrap()
        };
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(v["output"][0]["status"], "incomplete");
        assert_eq!(
            v["output"][0]["arguments"],
            r#"{"path":"a.txt","text":"cut mid-str"#
        );
    }
}

/// Codex 0.171's sub-agent tools, as it sends them.
fn multi_agent_namespace() -> Value {
    json!({"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents",
           "tools": [
               {"type": "function", "name": "spawn_agent", "description": "Start a sub-agent",
                "strict": false,
                "parameters": {"type": "object", "properties": {"task": {"type": "string"}},
                               "required": ["task"], "additionalProperties": false}},
               {"type": "function", "name": "wait_agent", "description": "Wait for a sub-agent",
                "strict": false, "parameters": {"type": "object", "properties": {}}}]})
}

#[tokio::test]
async fn namespace_tools_are_flattened_for_kiro_and_calls_come_back_namespaced() {
    let r = start().await;
    let body = |stream: bool, input: Value| {
        json!({"model": "claude-sonnet-4-5", "stream": stream, "reasoning": {"effort": NO_REASONING},
               "input": input,
               "tools": [{"type": "function", "name": "shell", "parameters": {"type": "object"}},
                         multi_agent_namespace(),
                         {"type": "web_search", "external_web_access": false}]})
    };
    let args = r#"{"task":"count the files"}"#;
    for stream in [false, true] {
        r.mock.push_reply(Reply::Stream(
            Script::new()
                .metadata()
                .tool_call("tooluse_s1", "multi_agent_v1__spawn_agent", args)
                .end(),
        ));
        let (s, _, b) = responses(&r, body(stream, json!("split the work"))).await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        let v = if stream {
            let ev = events(&b);
            // the item is announced and finished with the client's name and namespace
            for kind in ["response.output_item.added", "response.output_item.done"] {
                let (_, d) = ev.iter().find(|(n, _)| n == kind).unwrap();
                assert_eq!(d["item"]["name"], "spawn_agent", "{kind}: {d}");
                assert_eq!(d["item"]["namespace"], "multi_agent_v1", "{kind}: {d}");
            }
            let (_, done) = ev
                .iter()
                .find(|(n, _)| n == "response.function_call_arguments.done")
                .unwrap();
            assert_eq!(done["name"], "spawn_agent");
            ev.last().unwrap().1["response"].clone()
        } else {
            serde_json::from_slice(&b).unwrap()
        };
        let item = &v["output"][0];
        assert_eq!(item["type"], "function_call", "{v}");
        assert_eq!(item["name"], "spawn_agent");
        assert_eq!(item["namespace"], "multi_agent_v1");
        assert_eq!(item["call_id"], "tooluse_s1");
        assert_eq!(item["arguments"], args);
    }
    // Kiro saw each inner tool under its flattened name, beside the plain function; the web
    // search tool (which Kiro cannot run) is left out
    let up = r.last_generate();
    let names: Vec<&str> = up["conversationState"]["currentMessage"]["userInputMessage"]
        ["userInputMessageContext"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["toolSpecification"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "shell",
            "multi_agent_v1__spawn_agent",
            "multi_agent_v1__wait_agent"
        ]
    );
    // Codex replays the call (name + namespace) with its output: Kiro gets the flattened name
    r.mock
        .push_reply(Reply::Stream(Script::text("Started.", 4)));
    let replay = json!([
        {"type": "message", "role": "user", "content": "split the work"},
        {"type": "function_call", "call_id": "tooluse_s1", "name": "spawn_agent",
         "namespace": "multi_agent_v1", "arguments": args},
        {"type": "function_call_output", "call_id": "tooluse_s1", "output": "agent 7 started"}]);
    let (s, _, b) = responses(&r, body(false, replay)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let up = r.last_generate();
    let uses = &up["conversationState"]["history"][1]["assistantResponseMessage"]["toolUses"];
    assert_eq!(
        uses,
        &json!([{"toolUseId": "tooluse_s1", "name": "multi_agent_v1__spawn_agent",
                 "input": {"task": "count the files"}}])
    );
    let results = &up["conversationState"]["currentMessage"]["userInputMessage"]
        ["userInputMessageContext"]["toolResults"];
    assert_eq!(results[0]["toolUseId"], "tooluse_s1");
    assert_eq!(results[0]["content"][0]["text"], "agent 7 started");
}

#[tokio::test]
async fn a_long_namespaced_name_is_shortened_stably_within_kiros_rule() {
    use kiro_gateway::api::responses::convert::flat_name;
    let ns = "mcp__a_very_long_server_name_for_the_integration";
    let long = flat_name(ns, "list_all_open_pull_requests_with_reviews");
    assert_eq!(long.len(), 64, "{long}");
    assert!(long.starts_with("mcp__a_very_long_server_name_for_the_integration__list_"));
    assert!(long[56..].chars().all(|c| c.is_ascii_hexdigit()), "{long}");
    assert_eq!(&long[55..56], "_");
    // stable, and distinct from a sibling that shares the first 55 characters
    assert_eq!(
        long,
        flat_name(ns, "list_all_open_pull_requests_with_reviews")
    );
    assert_ne!(
        long,
        flat_name(ns, "list_all_open_pull_requests_with_comments")
    );
    // characters Kiro refuses are replaced (and hashed, so `a.b` and `a_b` stay apart)
    let dotted = flat_name("my.ns", "tool");
    assert!(
        kiro_gateway::api::conversation::valid_tool_name(&dotted),
        "{dotted}"
    );
    assert!(dotted.starts_with("my_ns__tool_"), "{dotted}");
    assert_ne!(dotted, flat_name("my_ns", "tool"));
    assert_eq!(
        flat_name("multi_agent_v1", "spawn_agent"),
        "multi_agent_v1__spawn_agent"
    );

    // a call of the long tool comes back under its own name and namespace
    let r = start().await;
    r.mock.push_reply(Reply::Stream(
        Script::new()
            .metadata()
            .tool_call("tooluse_l", &long, "{}")
            .end(),
    ));
    let (s, _, b) = responses(
        &r,
        json!({"model": "claude-sonnet-4-5", "reasoning": {"effort": NO_REASONING}, "input": "go",
               "tools": [{"type": "namespace", "name": ns, "tools": [
                   {"type": "function", "name": "list_all_open_pull_requests_with_reviews",
                    "parameters": {"type": "object"}}]}]}),
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        v["output"][0]["name"],
        "list_all_open_pull_requests_with_reviews"
    );
    assert_eq!(v["output"][0]["namespace"], ns);
}

#[tokio::test]
async fn a_refusal_counts_only_the_clients_own_input_after_a_chained_response() {
    let r = start().await;
    r.mock.push_reply(Reply::Stream(Script::text("Hello", 4)));
    let (s, _, b) = responses(
        &r,
        json!({"model": "claude-sonnet-4-5", "reasoning": {"effort": NO_REASONING},
               "input": [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]}),
    )
    .await;
    assert_eq!(s, 200);
    let first: Value = serde_json::from_slice(&b).unwrap();
    // three stored items come first; the client's broken part is still its input[0]
    let (s, _, b) = responses(
        &r,
        json!({"model": "claude-sonnet-4-5", "reasoning": {"effort": NO_REASONING},
               "previous_response_id": first["id"],
               "input": [{"role": "user", "content": [
                   {"type": "input_image", "image_url": "data:image/png;base64,@@"}]}]}),
    )
    .await;
    assert_eq!(s, 400);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        v["error"]["message"],
        "input[0].content[0]: image data is not valid base64"
    );
    assert_eq!(v["error"]["param"], "input[0].content[0].image_url");
}
