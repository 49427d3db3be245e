"""The OpenAI Responses API (`POST /v1/responses`, `GET /v1/responses/{id}`) through the real
openai SDK, langchain-openai (`use_responses_api=True`) and a Codex-shaped raw request, with the
mock Kiro upstream scripted per test.

Run with `pytest -s` to see the recorded event sequence of the Codex exchange.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

MODEL = "claude-sonnet-4-5"  # what clients send
KIRO_MODEL = "claude-sonnet-4.5"  # what the upstream must receive
REPO = Path(__file__).resolve().parents[2]

PARIS_ARGS = '{"city":"Paris"}'
TIME_ARGS_OBJ = {"tz": "Europe/Paris", "note": 'say "hi"\n\tà 日本 🎉', "path": "C:\\tmp"}
TIME_ARGS = json.dumps(TIME_ARGS_OBJ, ensure_ascii=False, separators=(",", ":"), sort_keys=True)

GET_WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "City name"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
GET_TIME = {
    "type": "function",
    "name": "get_time",
    "description": "Get the local time in a time zone.",
    "parameters": {
        "type": "object",
        "properties": {"tz": {"type": "string"}, "note": {"type": "string"}, "path": {"type": "string"}},
        "required": ["tz"],
    },
    "strict": False,
}

APPLY_PATCH_GRAMMAR = "start: /.+/"
APPLY_PATCH_TOOL = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Use the `apply_patch` tool to edit files. This is a FREEFORM tool, so do not wrap the patch in JSON.",
    "format": {"type": "grammar", "syntax": "lark", "definition": APPLY_PATCH_GRAMMAR},
}
SHELL_TOOL = {
    "type": "function",
    "name": "shell",
    "description": "Runs a shell command and returns its output.",
    "strict": False,
    "parameters": {
        "type": "object",
        "properties": {
            "command": {"type": "array", "items": {"type": "string"}, "description": "The command to execute"},
            "workdir": {"type": "string", "description": "The working directory to execute the command in"},
            "timeout_ms": {"type": "number", "description": "The timeout for the command in milliseconds"},
        },
        "required": ["command"],
        "additionalProperties": False,
    },
}
PATCH = (
    "*** Begin Patch\n"
    "*** Update File: README.md\n"
    "@@\n"
    "-# Helo wörld\n"
    '+# Hello wörld "quoted" \\o/\n'
    "*** End Patch"
)

# Mid-stream upstream failures (mock faults), frame numbers counted from the first frame.
FAULTS = {
    "reset": {"type": "reset_at", "frame": 3},
    "exception": {"type": "exception_at", "frame": 2, "kind": "InternalServerException", "message": "boom"},
    "bad_crc": {"type": "bad_crc_at", "frame": 3},
}
FAULT_TEXT = ["Once ", "upon ", "a ", "time, ", "in ", "Zürich, ", "日本…"]

TERMINAL = ("response.completed", "response.incomplete", "response.failed")

# The closing figures of test_currency.py: a metadataEvent as newer runtimes send it.
TOKEN_USAGE = {
    "uncachedInputTokens": 120,
    "cacheReadInputTokens": 3000,
    "cacheWriteInputTokens": 100,
    "outputTokens": 42,
    "totalTokens": 3262,
}


# --- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture
def client(api_base: str, api_key: str) -> Iterator[openai.OpenAI]:
    # No SDK retries: every retry seen in these tests is the gateway's.
    with openai.OpenAI(base_url=api_base, api_key=api_key, max_retries=0, timeout=30.0) as c:
        yield c


def auth(key: str = "test-key") -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def current(body: dict[str, Any]) -> dict[str, Any]:
    return body["conversationState"]["currentMessage"]["userInputMessage"]


def history(body: dict[str, Any]) -> list[dict[str, Any]]:
    return body["conversationState"].get("history", [])


def user_turns(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [h["userInputMessage"] for h in history(body) if "userInputMessage" in h]


def assistant_turns(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [h["assistantResponseMessage"] for h in history(body) if "assistantResponseMessage" in h]


def upstream_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    ctx = current(body).get("userInputMessageContext") or {}
    return [t["toolSpecification"] for t in ctx.get("tools", [])]


def dump(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else x.model_dump(mode="json", warnings=False)


def raw_event(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": "raw", "event_type": event_type, "payload": json.dumps(payload, ensure_ascii=False)}


def metadata_event(stop_reason: str = "END_TURN") -> dict[str, Any]:
    return raw_event("metadataEvent", {"tokenUsage": TOKEN_USAGE, "stopReason": stop_reason})


def assert_error_shape(body: Any) -> dict[str, Any]:
    """`{"error": {"message", "type", "param", "code"}}`, as the OpenAI API answers errors."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err, dict), body
    missing = {"message", "type", "param", "code"} - set(err)
    assert not missing, f"error object lacks {missing}: {body}"
    assert isinstance(err["message"], str) and err["message"], body
    assert isinstance(err["type"], str) and err["type"], body
    assert err["param"] is None or isinstance(err["param"], str), body
    assert err["code"] is None or isinstance(err["code"], (str, int)), body
    return err


def assert_usage(usage: Any, *, reasoning: bool = False) -> dict[str, Any]:
    """The Responses usage object as Codex and the SDK read it: integer figures, and the detail
    objects (when present) carrying their counters."""
    u = dump(usage)
    assert u is not None, "usage is missing"
    i, o, t = u["input_tokens"], u["output_tokens"], u["total_tokens"]
    assert all(type(x) is int for x in (i, o, t)), u
    assert i >= 0 and o > 0 and t == i + o, u
    details = u.get("output_tokens_details")
    assert isinstance(details, dict) and type(details.get("reasoning_tokens")) is int, u
    if reasoning:
        assert 0 < details["reasoning_tokens"] <= o, u
    else:
        assert details["reasoning_tokens"] == 0, u
    if u.get("input_tokens_details") is not None:
        assert type(u["input_tokens_details"].get("cached_tokens")) is int, u
    return u


def assert_message_item(item: Any, text: str) -> None:
    d = dump(item)
    assert d["type"] == "message", d
    assert isinstance(d["id"], str) and d["id"].startswith("msg_"), d
    assert d["role"] == "assistant", d
    assert d["status"] == "completed", d
    assert len(d["content"]) == 1, d
    part = d["content"][0]
    assert part["type"] == "output_text", d
    assert part["text"] == text, d
    assert part["annotations"] == [], d


def assert_function_call_item(item: Any, call_id: str, name: str, arguments: str) -> None:
    d = dump(item)
    assert d["type"] == "function_call", d
    assert isinstance(d["id"], str) and d["id"].startswith("fc_"), d
    assert d["call_id"] == call_id, d
    assert d["name"] == name, d
    assert isinstance(d["arguments"], str), d
    assert json.loads(d["arguments"]) == json.loads(arguments), d
    assert d["status"] == "completed", d


def assert_reasoning_item(item: Any, text: str) -> None:
    d = dump(item)
    assert d["type"] == "reasoning", d
    assert isinstance(d["id"], str) and d["id"].startswith("rs_"), d
    assert isinstance(d["summary"], list) and d["summary"], d
    assert all(s["type"] == "summary_text" for s in d["summary"]), d
    assert "".join(s["text"] for s in d["summary"]) == text, d


def collapse(types: Iterable[str]) -> list[str]:
    """Event types with each run of one `*.delta` type written once (the number of deltas
    follows the upstream's chunks; their order and content are checked separately)."""
    out: list[str] = []
    for t in types:
        if t.endswith(".delta") and out and out[-1] == t:
            continue
        out.append(t)
    return out


def message_events() -> list[str]:
    return [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]


def function_call_events() -> list[str]:
    return [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]


def custom_tool_call_events() -> list[str]:
    return [
        "response.output_item.added",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.output_item.done",
    ]


def reasoning_events() -> list[str]:
    return [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
    ]


def stream_of(*items: list[str], end: str = "response.completed") -> list[str]:
    return ["response.created", "response.in_progress", *(e for item in items for e in item), end]


def check_stream_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What every Responses stream must satisfy (OpenAI's format, the SDK's stream helper and
    Codex): consecutive sequence numbers from 0, one response id throughout, items added before
    their deltas and done after them, deltas that add up to the done values. Returns the
    finished items by output index."""
    types = [e["type"] for e in events]
    assert [e.get("sequence_number") for e in events] == list(range(len(events))), types
    assert types[0] == "response.created", types
    assert sum(t in TERMINAL for t in types) <= 1, types
    resp_id = events[0]["response"]["id"]
    assert isinstance(resp_id, str) and resp_id.startswith("resp_"), events[0]
    assert events[0]["response"]["object"] == "response", events[0]
    assert events[0]["response"]["status"] == "in_progress", events[0]
    for e in events:
        if "response" in e:
            assert e["response"]["id"] == resp_id, e

    added: dict[int, dict[str, Any]] = {}
    done: dict[int, dict[str, Any]] = {}
    acc: dict[tuple[str, int], str] = {}
    for e in events:
        t = e["type"]
        if t == "response.output_item.added":
            idx = e["output_index"]
            assert idx not in added and idx == len(added), f"output_index {idx} after {sorted(added)}"
            assert all(i in done for i in added), f"item {idx} added before the previous ones were done: {types}"
            assert isinstance(e["item"].get("id"), str) and e["item"]["id"], e
            added[idx] = e["item"]
            continue
        if "output_index" in e:
            idx = e["output_index"]
            assert idx in added and idx not in done, f"{t} for item {idx} outside its added/done: {types}"
            if "item_id" in e:
                assert e["item_id"] == added[idx]["id"], e
        if t == "response.output_item.done":
            item = e["item"]
            assert item["type"] == added[idx]["type"] and item["id"] == added[idx]["id"], (added[idx], item)
            done[idx] = item
        elif t == "response.output_text.delta":
            assert added[idx]["type"] == "message" and e["content_index"] == 0, e
            acc[("text", idx)] = acc.get(("text", idx), "") + e["delta"]
        elif t == "response.output_text.done":
            assert e["text"] == acc.get(("text", idx), ""), (e, acc)
        elif t in ("response.content_part.added", "response.content_part.done"):
            assert added[idx]["type"] == "message" and e["content_index"] == 0, e
            assert e["part"]["type"] == "output_text", e
            if t.endswith(".done"):
                assert e["part"]["text"] == acc.get(("text", idx), ""), (e, acc)
        elif t == "response.function_call_arguments.delta":
            assert added[idx]["type"] == "function_call", e
            acc[("args", idx)] = acc.get(("args", idx), "") + e["delta"]
        elif t == "response.function_call_arguments.done":
            assert e["arguments"] == acc.get(("args", idx), ""), (e, acc)
        elif t == "response.custom_tool_call_input.delta":
            assert added[idx]["type"] == "custom_tool_call", e
            acc[("input", idx)] = acc.get(("input", idx), "") + e["delta"]
        elif t == "response.custom_tool_call_input.done":
            assert e["input"] == acc.get(("input", idx), ""), (e, acc)
        elif t == "response.reasoning_summary_text.delta":
            assert added[idx]["type"] == "reasoning" and e["summary_index"] == 0, e
            acc[("summary", idx)] = acc.get(("summary", idx), "") + e["delta"]
        elif t == "response.reasoning_summary_text.done":
            assert e["text"] == acc.get(("summary", idx), ""), (e, acc)
        elif t in ("response.reasoning_summary_part.added", "response.reasoning_summary_part.done"):
            assert added[idx]["type"] == "reasoning" and e["summary_index"] == 0, e

    # the done items carry what the deltas built
    for idx, item in done.items():
        if item["type"] == "message":
            assert "".join(p["text"] for p in item["content"]) == acc.get(("text", idx), ""), item
        elif item["type"] == "function_call":
            assert item["arguments"] == acc.get(("args", idx), ""), item
        elif item["type"] == "custom_tool_call":
            assert item["input"] == acc.get(("input", idx), ""), item
        elif item["type"] == "reasoning":
            assert "".join(s["text"] for s in item["summary"]) == acc.get(("summary", idx), ""), item

    last = events[-1]
    if last["type"] in ("response.completed", "response.incomplete"):
        assert sorted(done) == sorted(added), f"items never done: {types}"
        final_output = last["response"]["output"]
        assert [o["id"] for o in final_output] == [done[i]["id"] for i in sorted(done)], last
        for i, item in zip(sorted(done), final_output):
            assert is_subset(done[i], item), f"final output item differs from its done event: {done[i]} vs {item}"
    return done


def is_subset(a: Any, b: Any) -> bool:
    """`a` is contained in `b`: the same values, with extra object members allowed in `b` (the
    SDK's stream helper adds parsed fields to the final response)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and all(k in b and is_subset(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(is_subset(x, y) for x, y in zip(a, b))
    return a == b


def strings(x: Any) -> list[str]:
    """Every string value inside a JSON value."""
    if isinstance(x, str):
        return [x]
    if isinstance(x, dict):
        return [s for v in x.values() for s in strings(v)]
    if isinstance(x, list):
        return [s for v in x for s in strings(v)]
    return []


def sse_events(resp: httpx.Response) -> list[dict[str, Any]]:
    """The JSON events of a Responses SSE body, read from `data:` lines (as the SDK and Codex
    read them); an `event:` line, when sent, must name the data's `type`."""
    events: list[dict[str, Any]] = []
    name: str | None = None
    try:
        for line in resp.iter_lines():
            if line.startswith("event:"):
                name = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    continue
                ev = json.loads(data)
                if name is not None:
                    assert name == ev.get("type"), f"event: {name} with data of type {ev.get('type')}"
                events.append(ev)
                name = None
    except (httpx.RemoteProtocolError, httpx.ReadError):
        pass  # judged by what arrived before the connection ended
    return events


def post_stream(raw: httpx.Client, body: dict[str, Any], headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    with raw.stream("POST", "/v1/responses", headers=headers or auth(), json=body) as resp:
        assert resp.status_code == 200, (resp.status_code, resp.read())
        ctype = resp.headers.get("content-type", "")
        assert ctype.startswith("text/event-stream"), ctype
        return sse_events(resp)


def sdk_stream(client: openai.OpenAI, **kwargs: Any) -> tuple[list[Any], Any]:
    """Events of `responses.stream()` (the SDK helper) and its final response."""
    with client.responses.stream(**kwargs) as stream:
        events = list(stream)
        final = stream.get_final_response()
    return events, final


def png_1x1() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x80\x00"))
        + chunk(b"IEND", b"")
    )


# === non-streamed answers =========================================================================


def test_create_plain_text(client, mock):
    text = mock.reply_text("Bonjour ! ", "Café crème, ", "日本語 ", "and emoji 🎉.")
    raw_resp = client.responses.with_raw_response.create(
        model=MODEL, input="Say hello in three languages", instructions="You are terse."
    )
    assert raw_resp.status_code == 200
    body = raw_resp.http_response.json()
    r = raw_resp.parse()

    assert r.id.startswith("resp_"), r.id
    assert r.object == "response"
    assert r.status == "completed"
    assert r.model == MODEL
    assert isinstance(r.created_at, (int, float)) and r.created_at > 1_600_000_000, r.created_at
    assert r.output_text == text
    assert len(r.output) == 1, r.output
    assert_message_item(r.output[0], text)
    assert r.error is None and r.incomplete_details is None, (r.error, r.incomplete_details)
    assert_usage(r.usage)
    # output_text is the SDK's convenience property, not a server field; no invented cache figures
    assert "output_text" not in body, body
    assert "input_tokens_details" not in body["usage"] or body["usage"]["input_tokens_details"] is None, body["usage"]

    chat = mock.last_chat()
    cur = current(chat)
    assert cur["modelId"] == KIRO_MODEL
    assert "Say hello in three languages" in cur["content"]
    assert "You are terse." in json.dumps(chat, ensure_ascii=False)
    assert "thinking_mode" not in json.dumps(chat), "no reasoning was asked for"
    assert len(mock.chat_requests()) == 1


def test_create_with_function_tools(client, mock):
    mock.reply(
        [
            mock.text("Let me check… "),
            mock.text("один момент."),
            mock.tool_call("tooluse_w1", "get_weather", PARIS_ARGS),
            mock.tool_call("tooluse_t2", "get_time", TIME_ARGS, fragment=5),
        ]
    )
    r = client.responses.create(
        model=MODEL,
        input="Weather and time in Paris?",
        tools=[GET_WEATHER, GET_TIME],
        tool_choice="auto",
        parallel_tool_calls=True,
    )
    assert r.status == "completed"
    assert [o.type for o in r.output] == ["message", "function_call", "function_call"], r.output
    assert_message_item(r.output[0], "Let me check… один момент.")
    assert_function_call_item(r.output[1], "tooluse_w1", "get_weather", PARIS_ARGS)
    assert_function_call_item(r.output[2], "tooluse_t2", "get_time", TIME_ARGS)
    assert json.loads(r.output[2].arguments) == TIME_ARGS_OBJ
    assert len({o.id for o in r.output}) == 3, "item ids must be distinct"
    assert r.output_text == "Let me check… один момент."
    assert_usage(r.usage)

    specs = upstream_tools(mock.last_chat())
    assert [s["name"] for s in specs] == ["get_weather", "get_time"], specs
    assert specs[0]["description"] == "Get the current weather for a city."
    assert specs[0]["inputSchema"]["json"]["properties"]["city"]["type"] == "string"


def test_create_tool_call_only(client, mock):
    mock.reply([mock.tool_call("tooluse_only", "get_weather", PARIS_ARGS)])
    r = client.responses.create(model=MODEL, input="Weather in Paris?", tools=[GET_WEATHER])
    assert r.status == "completed"
    assert len(r.output) == 1, r.output
    assert_function_call_item(r.output[0], "tooluse_only", "get_weather", PARIS_ARGS)
    assert r.output_text == ""


def test_create_message_items_with_roles(client, mock):
    text = mock.reply_text("Fine.")
    r = client.responses.create(
        model=MODEL,
        input=[
            {"role": "system", "content": "You are terse."},  # no `type`: still a message
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Answer in English."}]},
            {"role": "user", "content": "Hi"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "How are you?"}]},
        ],
    )
    assert r.output_text == text
    body = mock.last_chat()
    hist = history(body)
    assert len(hist) == 2, hist
    first = hist[0]["userInputMessage"]["content"]
    assert "You are terse." in first and "Answer in English." in first and "Hi" in first, first
    assert hist[1]["assistantResponseMessage"]["content"] == "Hello!"
    assert current(body)["content"] == "How are you?"
    assert current(body)["modelId"] == KIRO_MODEL


def test_create_input_image_data_url(client, mock):
    b64 = base64.b64encode(png_1x1()).decode()
    text = mock.reply_text("A single ", "pixel.")
    r = client.responses.create(
        model=MODEL,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is in this picture? ¿Qué es?"},
                    {"type": "input_image", "image_url": f"data:image/png;base64,{b64}", "detail": "auto"},
                ],
            }
        ],
    )
    assert r.output_text == text
    cur = current(mock.last_chat())
    assert cur["images"] == [{"format": "png", "source": {"bytes": b64}}]
    assert "What is in this picture? ¿Qué es?" in cur["content"]


def test_create_text_format_json_schema_is_an_instruction(client, mock):
    answer = '{"city":"Paris","temperature_c":18}'
    mock.reply_text(answer)
    r = client.responses.create(
        model=MODEL,
        input="Weather in Paris as JSON",
        text={
            "format": {
                "type": "json_schema",
                "name": "weather_report",
                "strict": True,
                "schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "temperature_c": {"type": "number"}},
                    "required": ["city", "temperature_c"],
                    "additionalProperties": False,
                },
            }
        },
    )
    assert r.output_text == answer
    sent = json.dumps(mock.last_chat(), ensure_ascii=False)
    assert "temperature_c" in sent, "the schema must reach the model as an instruction"


def test_create_reasoning_item(client, mock):
    thinking = "Two and two: that is 4."
    mock.reply([mock.text("<thinking>Two and two"), mock.text(": that is 4.</thinking>"), mock.text("It is 4.")])
    r = client.responses.create(
        model=MODEL, input="What is 2 + 2?", reasoning={"effort": "medium", "summary": "auto"}
    )
    assert r.status == "completed"
    assert [o.type for o in r.output] == ["reasoning", "message"], r.output
    assert_reasoning_item(r.output[0], thinking)
    assert_message_item(r.output[1], "It is 4.")
    assert r.output_text == "It is 4."
    assert_usage(r.usage, reasoning=True)
    assert "<thinking_mode>enabled</thinking_mode>" in json.dumps(mock.last_chat())


def test_create_max_tokens_is_incomplete(client, mock):
    mock.reply([mock.text("Cut sho"), metadata_event("MAX_TOKENS")], end=False)
    r = client.responses.create(model=MODEL, input="Write a long story", max_output_tokens=16)
    assert r.status == "incomplete", r
    assert r.incomplete_details is not None and r.incomplete_details.reason == "max_output_tokens", r
    assert r.output_text == "Cut sho"


def test_create_service_usage_with_cache_figures(client, mock):
    mock.reply([mock.text("Cached answer."), metadata_event(), {"type": "metering", "credits": 0.37}], end=False)
    resp = client.responses.with_raw_response.create(model=MODEL, input="hi")
    u = assert_usage(resp.parse().usage)
    assert (u["input_tokens"], u["output_tokens"], u["total_tokens"]) == (3220, 42, 3262), u
    assert u["input_tokens_details"]["cached_tokens"] == 3000, u
    assert resp.http_response.json()["usage"]["input_tokens_details"] == {"cached_tokens": 3000}


# === streamed answers =============================================================================


def test_stream_text_events_in_order(client, mock):
    pieces = ("Hel", "lo, ", "wörld ", "— ", "日本 ", "👋🏽", "!")
    text = mock.reply_text(*pieces)
    events, final = sdk_stream(client, model=MODEL, input="Greet me")
    dicts = [dump(e) for e in events]
    types = [e.type for e in events]
    assert collapse(types) == stream_of(message_events()), types
    assert types.count("response.output_text.delta") >= 1
    assert [e.sequence_number for e in events] == list(range(len(events))), types
    done = check_stream_events(dicts)
    assert_message_item(done[0], text)
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == text

    assert final.id == events[0].response.id and final.id.startswith("resp_")
    assert final.status == "completed"
    assert final.model == MODEL
    assert final.output_text == text
    assert_message_item(final.output[0], text)
    assert_usage(final.usage)

    # a streamed response is stored too (store defaults to true)
    got = client.responses.retrieve(final.id)
    assert got.id == final.id and got.status == "completed"
    assert got.output_text == text


def test_stream_tool_call_events_in_order(client, mock):
    mock.reply(
        [
            mock.text("Checking "),
            mock.text("the météo."),
            mock.tool_call("tooluse_w1", "get_weather", PARIS_ARGS, fragment=4),
            mock.tool_call("tooluse_t2", "get_time", TIME_ARGS, fragment=3),
        ]
    )
    events, final = sdk_stream(client, model=MODEL, input="Weather and time?", tools=[GET_WEATHER, GET_TIME])
    types = [e.type for e in events]
    assert collapse(types) == stream_of(message_events(), function_call_events(), function_call_events()), types
    done = check_stream_events([dump(e) for e in events])
    assert_message_item(done[0], "Checking the météo.")
    assert_function_call_item(done[1], "tooluse_w1", "get_weather", PARIS_ARGS)
    assert_function_call_item(done[2], "tooluse_t2", "get_time", TIME_ARGS)
    # the arguments stream fragment by fragment, not in one piece at the end
    arg_deltas = [e for e in events if e.type == "response.function_call_arguments.delta" and e.output_index == 2]
    assert len(arg_deltas) > 1, arg_deltas

    assert final.status == "completed"
    assert [o.type for o in final.output] == ["message", "function_call", "function_call"]
    assert final.output[1].call_id == "tooluse_w1"
    assert final.output[1].parsed_arguments == {"city": "Paris"}  # strict tool: the SDK parses it
    assert json.loads(final.output[2].arguments) == TIME_ARGS_OBJ
    assert final.output_text == "Checking the météo."
    assert_usage(final.usage)


def test_stream_reasoning_events_in_order(client, mock):
    mock.reply([mock.text("<thinking>Two and two"), mock.text(": that is 4.</thinking>"), mock.text("It is 4.")])
    events, final = sdk_stream(
        client, model=MODEL, input="What is 2 + 2?", reasoning={"effort": "medium", "summary": "auto"}
    )
    types = [e.type for e in events]
    assert collapse(types) == stream_of(reasoning_events(), message_events()), types
    done = check_stream_events([dump(e) for e in events])
    assert_reasoning_item(done[0], "Two and two: that is 4.")
    assert_message_item(done[1], "It is 4.")
    assert final.output_text == "It is 4."
    assert_usage(final.usage, reasoning=True)


def test_stream_custom_tool_call_sdk(client, mock):
    mock.reply([mock.tool_call("tooluse_p1", "apply_patch", json.dumps({"input": PATCH}), fragment=6)])
    events, final = sdk_stream(client, model=MODEL, input="Fix the README title", tools=[APPLY_PATCH_TOOL])
    types = [e.type for e in events]
    assert collapse(types) == stream_of(custom_tool_call_events()), types
    done = check_stream_events([dump(e) for e in events])
    item = done[0]
    assert item["type"] == "custom_tool_call" and item["call_id"] == "tooluse_p1", item
    assert item["name"] == "apply_patch" and item["input"] == PATCH, item
    assert [o.type for o in final.output] == ["custom_tool_call"]
    assert final.output[0].input == PATCH


def test_create_custom_tool_call_non_stream(client, mock):
    mock.reply([mock.text("Patching."), mock.tool_call("tooluse_p1", "apply_patch", json.dumps({"input": PATCH}))])
    r = client.responses.create(model=MODEL, input="Fix the README title", tools=[APPLY_PATCH_TOOL])
    assert [o.type for o in r.output] == ["message", "custom_tool_call"], r.output
    call = dump(r.output[1])
    assert isinstance(call["id"], str) and call["id"], call
    assert (call["call_id"], call["name"], call["input"]) == ("tooluse_p1", "apply_patch", PATCH), call
    specs = upstream_tools(mock.last_chat())
    assert [s["name"] for s in specs] == ["apply_patch"], specs
    assert "input" in specs[0]["inputSchema"]["json"].get("properties", {}), specs[0]


def test_stream_max_tokens_ends_incomplete(client, mock):
    mock.reply([mock.text("Cut "), mock.text("sho"), metadata_event("MAX_TOKENS")], end=False)
    with client.responses.stream(model=MODEL, input="Write a long story", max_output_tokens=16) as stream:
        events = list(stream)
        with pytest.raises(RuntimeError, match="response.completed"):
            stream.get_final_response()
    types = [e.type for e in events]
    assert collapse(types) == stream_of(message_events(), end="response.incomplete"), types
    check_stream_events([dump(e) for e in events])
    last = events[-1].response
    assert last.status == "incomplete" and last.incomplete_details.reason == "max_output_tokens", last


# === tool results and stored conversations ========================================================


@pytest.mark.parametrize("calls", [1, 2], ids=["one-call", "parallel-calls"])
def test_function_call_output_round_trip(client, mock, calls):
    text = mock.reply_text("It is 18 °C in Paris ", "☀️.")
    items: list[dict[str, Any]] = [{"role": "user", "content": "What's the weather and time in Paris?"}]
    if calls == 2:
        items.append({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me check."}]})
    items.append({"type": "function_call", "call_id": "tooluse_w1", "name": "get_weather", "arguments": PARIS_ARGS})
    if calls == 2:
        # replayed grouped, as Codex does: all calls, then all outputs
        items.append({"type": "function_call", "call_id": "tooluse_t2", "name": "get_time", "arguments": TIME_ARGS})
    items.append({"type": "function_call_output", "call_id": "tooluse_w1", "output": "18 C"})
    if calls == 2:
        items.append({"type": "function_call_output", "call_id": "tooluse_t2", "output": "14:05"})
    r = client.responses.create(model=MODEL, input=items, tools=[GET_WEATHER, GET_TIME])
    assert r.output_text == text
    assert r.status == "completed"

    body = mock.last_chat()
    hist = history(body)
    assert len(hist) == 2, hist
    assert "What's the weather and time in Paris?" in hist[0]["userInputMessage"]["content"]
    turn = hist[1]["assistantResponseMessage"]
    expected_uses = [{"toolUseId": "tooluse_w1", "name": "get_weather", "input": {"city": "Paris"}}]
    expected_results = [{"toolUseId": "tooluse_w1", "content": [{"text": "18 C"}], "status": "success"}]
    if calls == 2:
        assert "Let me check." in turn["content"], turn
        expected_uses.append({"toolUseId": "tooluse_t2", "name": "get_time", "input": TIME_ARGS_OBJ})
        expected_results.append({"toolUseId": "tooluse_t2", "content": [{"text": "14:05"}], "status": "success"})
    assert turn["toolUses"] == expected_uses, turn
    ctx = current(body)["userInputMessageContext"]
    assert ctx["toolResults"] == expected_results, ctx
    assert [t["toolSpecification"]["name"] for t in ctx["tools"]] == ["get_weather", "get_time"]


def test_previous_response_id_chains_and_retrieve(client, mock):
    mock.reply_text("Nice to meet you, ", "Zoé.")
    first = client.responses.create(model=MODEL, input="My name is Zoé.")
    assert first.output_text == "Nice to meet you, Zoé."
    assert len(history(mock.last_chat())) == 0

    mock.reply_text("Your name is Zoé.")
    second = client.responses.create(model=MODEL, input="What is my name?", previous_response_id=first.id)
    assert second.output_text == "Your name is Zoé."
    assert second.id != first.id
    body = mock.last_chat()
    hist = history(body)
    assert len(hist) == 2, hist
    assert "My name is Zoé." in hist[0]["userInputMessage"]["content"]
    assert hist[1]["assistantResponseMessage"]["content"] == "Nice to meet you, Zoé."
    assert current(body)["content"] == "What is my name?"

    mock.reply_text("Zoé, again.")
    third = client.responses.create(model=MODEL, input="Once more?", previous_response_id=second.id)
    assert third.output_text == "Zoé, again."
    hist = history(mock.last_chat())
    assert len(hist) == 4, hist
    assert [h["assistantResponseMessage"]["content"] for h in hist[1::2]] == ["Nice to meet you, Zoé.", "Your name is Zoé."]
    assert current(mock.last_chat())["content"] == "Once more?"

    got = client.responses.retrieve(first.id)
    assert got.id == first.id and got.object == "response"
    assert got.status == "completed" and got.model == MODEL
    assert got.output_text == "Nice to meet you, Zoé."
    assert [dump(o) for o in got.output] == [dump(o) for o in first.output]
    assert dump(got.usage) == dump(first.usage)
    assert client.responses.retrieve(second.id).output_text == "Your name is Zoé."


def test_function_call_output_after_previous_response_id(client, mock):
    mock.reply([mock.tool_call("tooluse_w1", "get_weather", PARIS_ARGS)])
    first = client.responses.create(model=MODEL, input="Weather in Paris?", tools=[GET_WEATHER])
    assert_function_call_item(first.output[0], "tooluse_w1", "get_weather", PARIS_ARGS)

    text = mock.reply_text("18 °C.")
    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": first.output[0].call_id, "output": "18 C"}],
        tools=[GET_WEATHER],
    )
    assert second.output_text == text
    body = mock.last_chat()
    turns = assistant_turns(body)
    assert len(turns) == 1, history(body)
    assert turns[0]["toolUses"] == [{"toolUseId": "tooluse_w1", "name": "get_weather", "input": {"city": "Paris"}}]
    assert current(body)["userInputMessageContext"]["toolResults"] == [
        {"toolUseId": "tooluse_w1", "content": [{"text": "18 C"}], "status": "success"}
    ]


def test_store_false_is_not_retrievable(client, mock):
    mock.reply_text("Forget me.")
    r = client.responses.create(model=MODEL, input="hi", store=False)
    assert r.output_text == "Forget me."
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.retrieve(r.id)
    err = assert_error_shape(info.value.response.json())
    assert err["type"] == "invalid_request_error" and err["code"] == "response_not_found", err

    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model=MODEL, input="again", previous_response_id=r.id)
    err = assert_error_shape(info.value.response.json())
    assert err["code"] == "previous_response_not_found", err
    assert len(mock.chat_requests()) == 1


def test_unknown_ids_are_404(client, mock):
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.retrieve("resp_doesnotexist0000")
    assert info.value.status_code == 404
    err = assert_error_shape(info.value.response.json())
    assert err["type"] == "invalid_request_error" and err["code"] == "response_not_found", err

    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model=MODEL, input="hi", previous_response_id="resp_doesnotexist0000")
    err = assert_error_shape(info.value.response.json())
    assert err["type"] == "invalid_request_error" and err["code"] == "previous_response_not_found", err
    assert mock.chat_requests() == []


# === Codex CLI ====================================================================================


CODEX_INSTRUCTIONS = (
    "You are Codex, based on GPT-5. You are running as a coding agent in the Codex CLI on a user's computer.\n"
    "## General\n- The arguments to `shell` will be passed to execvp().\n"
)


def codex_body(input_items: list[dict[str, Any]]) -> dict[str, Any]:
    """A request body as Codex builds it for a custom provider (`build_responses_request`)."""
    return {
        "model": KIRO_MODEL,  # the slug from ~/.codex/config.toml
        "instructions": CODEX_INSTRUCTIONS,
        "input": input_items,
        "tools": [
            SHELL_TOOL,
            APPLY_PATCH_TOOL,
            {"type": "web_search", "external_web_access": False},  # sent by default; not runnable here
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0199a7e2-5c1d-7f43-9b1e-2c8f7e6d5a41",
    }


def codex_headers() -> dict[str, str]:
    return {
        **auth(),
        "Accept": "text/event-stream",
        "Content-Type": "application/json",
        "originator": "codex_cli_rs",
        "User-Agent": "codex_cli_rs/0.142.0 (Ubuntu 24.4.0; x86_64) xterm-256color",
        "session_id": "0199a7e2-5c1d-7f43-9b1e-2c8f7e6d5a41",
        "x-client-request-id": "0199a7e2-5c1d-7f43-9b1e-2c8f7e6d5a41",
        "OpenAI-Beta": "responses=experimental",
    }


def codex_first_turn_items() -> list[dict[str, Any]]:
    """A Codex turn after one shell call: developer and context messages, the `additional_tools`
    item of Codex 0.150+, the user's task, a reasoning item without content, the call and its output."""
    return [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "<permissions instructions>approval policy: on-request</permissions instructions>"}],
        },
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "<environment_context>\n  <cwd>/home/zoé/project</cwd>\n</environment_context>"}],
        },
        {"type": "additional_tools", "role": "developer", "tools": []},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Fix the typo in README.md"}]},
        {"type": "reasoning", "summary": [], "encrypted_content": None},
        {
            "type": "function_call",
            "name": "shell",
            "arguments": json.dumps({"command": ["cat", "README.md"], "workdir": "/home/zoé/project"}, ensure_ascii=False),
            "call_id": "call_shell_1",
        },
        {
            "type": "function_call_output",
            "call_id": "call_shell_1",
            "output": "Exit code: 0\nWall time: 0.1 seconds\nOutput:\n# Helo wörld",
        },
    ]


def assert_codex_items_parse(done: dict[int, dict[str, Any]]) -> None:
    """Codex takes items only from output_item.done and drops those it cannot parse."""
    for item in done.values():
        t = item["type"]
        if t == "message":
            assert item["role"] == "assistant", item
            assert all(p["type"] == "output_text" for p in item["content"]), item
        elif t == "reasoning":
            assert isinstance(item["summary"], list), item
        elif t == "function_call":
            assert all(isinstance(item.get(k), str) for k in ("name", "call_id", "arguments")), item
        elif t == "custom_tool_call":
            assert all(isinstance(item.get(k), str) for k in ("name", "call_id", "input")), item
        else:
            pytest.fail(f"unexpected output item type {t}: {item}")


def test_codex_request_apply_patch_is_custom_tool_call(raw, mock):
    thinking = "The title is misspelled: Helo → Hello."
    mock.reply(
        [
            mock.text("<thinking>The title is misspelled"),
            mock.text(": Helo → Hello.</thinking>"),
            mock.text("Fixing the typo "),
            mock.text("in README.md."),
            mock.tool_call("call_patch_7", "apply_patch", json.dumps({"input": PATCH}, ensure_ascii=False), fragment=5),
        ]
    )
    events = post_stream(raw, codex_body(codex_first_turn_items()), codex_headers())
    types = [e["type"] for e in events]
    print("\nCodex exchange, event sequence (%d events):" % len(events))
    for e in events:
        extra = e.get("item", {}).get("type") if e["type"].startswith("response.output_item") else None
        print(f"  {e['sequence_number']:3d} {e['type']}" + (f" ({extra})" if extra else ""))
    print("collapsed:", " → ".join(collapse(types)))

    assert collapse(types) == stream_of(reasoning_events(), message_events(), custom_tool_call_events()), types
    done = check_stream_events(events)
    assert_codex_items_parse(done)
    assert_reasoning_item(done[0], thinking)
    assert_message_item(done[1], "Fixing the typo in README.md.")
    call = done[2]
    assert call["type"] == "custom_tool_call", call
    assert call["call_id"] == "call_patch_7" and call["name"] == "apply_patch", call
    assert call["input"] == PATCH, call

    completed = events[-1]["response"]
    assert completed["status"] == "completed" and completed["model"] == KIRO_MODEL, completed
    assert_usage(completed["usage"], reasoning=True)

    # what went upstream: the two runnable tools, the turns regrouped for Kiro
    body = mock.last_chat()
    specs = upstream_tools(body)
    assert [s["name"] for s in specs] == ["shell", "apply_patch"], specs
    assert specs[0]["inputSchema"]["json"]["properties"]["command"]["type"] == "array"
    hist = history(body)
    assert len(hist) == 2, hist
    assert "Fix the typo in README.md" in hist[0]["userInputMessage"]["content"]
    turn = hist[1]["assistantResponseMessage"]
    assert turn["toolUses"] == [
        {"toolUseId": "call_shell_1", "name": "shell", "input": {"command": ["cat", "README.md"], "workdir": "/home/zoé/project"}}
    ], turn
    results = current(body)["userInputMessageContext"]["toolResults"]
    assert [(r["toolUseId"], r["status"]) for r in results] == [("call_shell_1", "success")], results
    assert "# Helo wörld" in json.dumps(results[0]["content"], ensure_ascii=False), results
    sent = json.dumps(body, ensure_ascii=False)
    assert "additional_tools" not in sent and "web_search" not in sent, sent
    assert "<thinking_mode>enabled</thinking_mode>" in sent  # reasoning effort medium on a prompt-tag model

    # store: false keeps nothing
    r = raw.get(f"/v1/responses/{completed['id']}", headers=auth())
    assert r.status_code == 404, r.text


def test_codex_custom_tool_call_output_round_trip(raw, mock):
    mock.reply_text("Done: ", "the title now reads Hello.")
    items = codex_first_turn_items() + [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "The title is misspelled."}], "encrypted_content": None},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Fixing the typo."}]},
        {"type": "custom_tool_call", "call_id": "call_patch_7", "name": "apply_patch", "input": PATCH, "status": "completed"},
        {
            "type": "custom_tool_call_output",
            "call_id": "call_patch_7",
            "output": "Exit code: 0\nWall time: 0 seconds\nOutput:\nSuccess. Updated the following files:\nM README.md",
        },
    ]
    events = post_stream(raw, codex_body(items), codex_headers())
    types = [e["type"] for e in events]
    assert collapse(types) == stream_of(message_events()), types
    done = check_stream_events(events)
    assert_message_item(done[0], "Done: the title now reads Hello.")

    body = mock.last_chat()
    turns = assistant_turns(body)
    assert len(turns) == 2, history(body)
    uses = turns[1]["toolUses"]
    assert [(u["toolUseId"], u["name"]) for u in uses] == [("call_patch_7", "apply_patch")], uses
    # the raw patch goes back as the tool's input (wrapped as the tool's upstream schema wants)
    assert PATCH in strings(uses[0]["input"]), uses
    results = current(body)["userInputMessageContext"]["toolResults"]
    assert [(r["toolUseId"], r["status"]) for r in results] == [("call_patch_7", "success")], results
    assert "Updated the following files" in json.dumps(results[0]["content"]), results


# === errors =======================================================================================


@pytest.mark.parametrize("call", ["create", "stream", "retrieve"])
def test_wrong_key_is_authentication_error(api_base, mock, call):
    c = openai.OpenAI(base_url=api_base, api_key="wrong-key", max_retries=0, timeout=30.0)
    with c, pytest.raises(openai.AuthenticationError) as info:
        if call == "create":
            c.responses.create(model=MODEL, input="hi")
        elif call == "stream":
            with c.responses.stream(model=MODEL, input="hi") as s:
                list(s)
        else:
            c.responses.retrieve("resp_whatever")
    assert info.value.status_code == 401
    assert_error_shape(info.value.response.json())
    assert mock.chat_requests() == []


def test_bad_input_is_bad_request(client, raw, mock):
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input=5)  # type: ignore[arg-type]
    assert info.value.status_code == 400
    err = assert_error_shape(info.value.response.json())
    assert err["type"] == "invalid_request_error", err

    r = raw.post("/v1/responses", headers=auth(), json={"input": "hi"})  # no model
    assert r.status_code == 400, r.text
    assert r.headers.get("content-type", "").startswith("application/json")
    assert assert_error_shape(r.json())["type"] == "invalid_request_error"

    r = raw.post("/v1/responses", headers={**auth(), "Content-Type": "application/json"}, content=b"{not json")
    assert r.status_code == 400, r.text
    assert_error_shape(r.json())
    assert mock.chat_requests() == []


def test_unknown_input_items_and_tools_are_skipped(client, mock):
    text = mock.reply_text("ok")
    r = client.responses.create(
        model=MODEL,
        input=[
            {"type": "additional_tools", "role": "developer", "tools": []},
            {"type": "item_of_the_future", "whatever": 1},
            {"type": "reasoning", "id": "rs_old", "summary": [], "encrypted_content": None},
            {"role": "user", "content": "hi"},
        ],
        tools=[GET_WEATHER, {"type": "web_search"}, {"type": "image_generation"}],
        reasoning=None,
    )
    assert r.output_text == text
    assert [s["name"] for s in upstream_tools(mock.last_chat())] == ["get_weather"]


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_mid_stream_failure_sdk(client, mock, fault):
    mock.reply([mock.text(t) for t in FAULT_TEXT], faults=[FAULTS[fault]])
    seen: list[Any] = []
    raised: BaseException | None = None
    try:
        with client.responses.stream(model=MODEL, input="tell a story") as stream:
            for ev in stream:
                seen.append(ev)
            stream.get_final_response()
    except (openai.APIError, RuntimeError) as e:
        raised = e
    types = [e.type for e in seen]
    assert "response.completed" not in types, types
    # either the SDK raised mid-stream, or the stream ended with response.failed and
    # get_final_response() refused it: never a complete-looking answer
    assert raised is not None, f"a failed stream must not look complete: {types}"
    if not isinstance(raised, openai.APIError):
        assert types and types[-1] == "response.failed", (raised, types)
    text = "".join(e.delta for e in seen if e.type == "response.output_text.delta")
    assert "".join(FAULT_TEXT).startswith(text), text


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_mid_stream_failure_raw_sse(raw, mock, fault):
    mock.reply([mock.text(t) for t in FAULT_TEXT], faults=[FAULTS[fault]])
    events = post_stream(raw, {"model": MODEL, "input": "tell a story", "stream": True})
    types = [e["type"] for e in events]
    assert types, "no event at all"
    assert "response.completed" not in types and "response.incomplete" not in types, types
    assert types[-1] == "response.failed", types
    check_stream_events(events)
    failed = events[-1]["response"]
    assert failed["status"] == "failed", failed
    err = failed["error"]
    assert isinstance(err, dict) and isinstance(err.get("code"), str) and err["code"], failed
    assert isinstance(err.get("message"), str) and err["message"], failed
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert "".join(FAULT_TEXT).startswith(text), text


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_websocket_upgrade_is_426(raw, mock, method):
    headers = {
        **auth(),
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(b"kiro-gateway-ws!").decode(),
    }
    body = json.dumps({"model": MODEL, "input": "hi"}).encode() if method == "POST" else None
    r = raw.request(method, "/v1/responses", headers=headers, content=body)
    assert r.status_code == 426, (r.status_code, r.text)
    assert mock.chat_requests() == []


# === langchain-openai =============================================================================


@tool
def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    return "18 C"


@pytest.fixture
def lc(api_base: str, api_key: str) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=api_base, api_key=api_key, model=MODEL, use_responses_api=True, max_retries=0, timeout=30
    )


def test_langchain_responses_plain(lc, mock):
    text = mock.reply_text("Salut ", "à toi, ", "日本の友よ 🤖")
    msg = lc.invoke("hi")
    assert isinstance(msg, AIMessage)
    assert msg.text == text
    assert msg.response_metadata.get("status") == "completed", msg.response_metadata
    assert str(msg.response_metadata.get("id", "")).startswith("resp_"), msg.response_metadata
    um = msg.usage_metadata
    assert um is not None and all(type(um[k]) is int for k in ("input_tokens", "output_tokens", "total_tokens")), um
    assert um["total_tokens"] == um["input_tokens"] + um["output_tokens"] and um["output_tokens"] > 0, um
    assert current(mock.last_chat())["modelId"] == KIRO_MODEL


def test_langchain_responses_tool_call(lc, mock):
    mock.reply([mock.text("Checking."), mock.tool_call("tooluse_lc1", "get_weather", PARIS_ARGS)])
    llm = lc.bind_tools([get_weather])
    question = HumanMessage("Weather in Paris?")
    msg = llm.invoke([question])
    assert [(c["name"], c["args"], c["id"]) for c in msg.tool_calls] == [("get_weather", {"city": "Paris"}, "tooluse_lc1")]
    assert [s["name"] for s in upstream_tools(mock.last_chat())] == ["get_weather"]

    text = mock.reply_text("It is 18 °C.")
    answer = llm.invoke([question, msg, ToolMessage(content="18 C", tool_call_id="tooluse_lc1")])
    assert answer.text == text
    body = mock.last_chat()
    turns = assistant_turns(body)
    assert len(turns) == 1, history(body)
    assert turns[0]["toolUses"] == [{"toolUseId": "tooluse_lc1", "name": "get_weather", "input": {"city": "Paris"}}]
    assert current(body)["userInputMessageContext"]["toolResults"] == [
        {"toolUseId": "tooluse_lc1", "content": [{"text": "18 C"}], "status": "success"}
    ]


# === the example ==================================================================================


def test_responses_demo_example_runs(api_base, api_key, mock):
    env = {**os.environ, "OPENAI_BASE_URL": api_base, "KIRO_GATEWAY_KEY": api_key}
    p = subprocess.run(
        [sys.executable, str(REPO / "examples" / "responses_demo.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    # the mock's default reply echoes the prompt, once per request
    assert p.stdout.count("You said:") == 2, p.stdout
    assert len(mock.chat_requests()) == 2


# === Codex namespace tools =========================================================================

# Codex 0.171's sub-agent tools: a `namespace` tool holding functions.
MULTI_AGENT_NAMESPACE = {
    "type": "namespace",
    "name": "multi_agent_v1",
    "description": "Tools to run sub-agents.",
    "tools": [
        {
            "type": "function",
            "name": "spawn_agent",
            "description": "Start a sub-agent on a task.",
            "strict": False,
            "parameters": {
                "type": "object",
                "properties": {"task": {"type": "string"}},
                "required": ["task"],
                "additionalProperties": False,
            },
        },
        {
            "type": "function",
            "name": "wait_agent",
            "description": "Wait for a sub-agent to finish.",
            "strict": False,
            "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
        },
    ],
}
SPAWN_ARGS = '{"task":"count the files"}'


def test_codex_namespace_tool_call_and_replay(client, mock):
    # the model calls the inner tool under the flattened name Kiro knows it by
    mock.reply([mock.tool_call("tooluse_ns1", "multi_agent_v1__spawn_agent", SPAWN_ARGS, fragment=3)])
    task = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Split the work."}]}
    common = dict(
        model=MODEL,
        stream=True,
        instructions=CODEX_INSTRUCTIONS,
        tools=[SHELL_TOOL, MULTI_AGENT_NAMESPACE],
        tool_choice="auto",
        parallel_tool_calls=False,
        store=False,
        include=[],
    )
    events = list(client.responses.create(input=[task], **common))
    types = [e.type for e in events]
    assert collapse(types) == stream_of(function_call_events()), types
    done = check_stream_events([dump(e) for e in events])
    item = done[0]
    assert_function_call_item(item, "tooluse_ns1", "spawn_agent", SPAWN_ARGS)
    assert item["namespace"] == "multi_agent_v1", item
    added = next(dump(e) for e in events if e.type == "response.output_item.added")
    assert (added["item"]["name"], added["item"]["namespace"]) == ("spawn_agent", "multi_agent_v1"), added
    final = dump(events[-1].response)
    assert final["status"] == "completed", final
    assert (final["output"][0]["name"], final["output"][0]["namespace"]) == ("spawn_agent", "multi_agent_v1")
    specs = upstream_tools(mock.last_chat())
    assert [s["name"] for s in specs] == ["shell", "multi_agent_v1__spawn_agent", "multi_agent_v1__wait_agent"], specs

    # Codex replays the call as it got it, with the tool's output: the turn goes through and
    # Kiro sees its own name for the tool
    text = mock.reply_text("Agent ", "started.")
    replay = [
        task,
        {"type": "function_call", "call_id": "tooluse_ns1", "name": "spawn_agent",
         "namespace": "multi_agent_v1", "arguments": SPAWN_ARGS},
        {"type": "function_call_output", "call_id": "tooluse_ns1", "output": "agent 7 started"},
    ]
    events = list(client.responses.create(input=replay, **common))
    final = events[-1].response
    assert events[-1].type == "response.completed", [e.type for e in events]
    assert final.output_text == text
    body = mock.last_chat()
    assert assistant_turns(body)[-1]["toolUses"] == [
        {"toolUseId": "tooluse_ns1", "name": "multi_agent_v1__spawn_agent", "input": {"task": "count the files"}}
    ], assistant_turns(body)
    ctx = current(body)["userInputMessageContext"]
    assert ctx["toolResults"] == [
        {"toolUseId": "tooluse_ns1", "content": [{"text": "agent 7 started"}], "status": "success"}
    ], ctx
