"""The real anthropic Python SDK against the gateway's Anthropic API (/v1/messages,
/v1/messages/count_tokens, /v1/models), with the mock Kiro upstream scripted per test.

The SDK's base URL is the gateway root (it appends /v1/... itself). Note that anthropic 2.x sends
`Authorization: Bearer` for `api_key=` as well as for `auth_token=`; the `x-api-key` style (what
1.x SDKs and Claude Code send) is configured explicitly below, and every auth style checks the
header that actually went out.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import zlib
from typing import Any, Iterator

import anthropic
import httpx
import pytest

MODEL = "claude-sonnet-4-5"  # what clients send
KIRO_MODEL = "claude-sonnet-4.5"  # what the upstream must receive
MODEL_ALIASES = [
    ("claude-sonnet-4-5", "claude-sonnet-4.5"),
    ("claude-haiku-4-5-20251001", "claude-haiku-4.5"),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4.5"),
]
ANTHROPIC_VERSION = "2023-06-01"
MAX_TOKENS = 1024

GET_WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "City name"}},
        "required": ["city"],
    },
}
GET_TIME = {
    "name": "get_time",
    "description": "Get the local time in a time zone.",
    "input_schema": {
        "type": "object",
        "properties": {"tz": {"type": "string"}},
        "required": ["tz"],
    },
}

# Compact JSON with sorted keys and raw non-ASCII. Has backslashes, quotes, \n, \t, é, 日本, emoji.
TRICKY_ARGS_OBJ = {
    "n": 3,
    "nested": {"list": [1, "a\\b", None], "ok": True},
    "path": "C:\\Users\\zoé\\日本",
    "quote": 'say "hi" 🎉',
    "text": "line1\nline2\ttab",
}
TRICKY_ARGS = json.dumps(TRICKY_ARGS_OBJ, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
PARIS_ARGS = '{"city":"Paris"}'

RATE_LIMITED_BODY = '{"message":"Rate exceeded","reason":null}'

AUTH_STYLES = ["x-api-key", "bearer-auth-token", "sdk-api-key"]


@pytest.fixture(autouse=True)
def _no_anthropic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK reads ANTHROPIC_* variables (base URL, extra headers, credentials): none of this
    machine's may leak into the tests."""
    for name in list(os.environ):
        if name.startswith("ANTHROPIC_"):
            monkeypatch.delenv(name)


def make_client(
    base_url: str,
    key: str,
    style: str = "sdk-api-key",
    *,
    seen: list[dict[str, str]] | None = None,
    **kwargs: Any,
) -> anthropic.Anthropic:
    """An SDK client authenticating in one of AUTH_STYLES; `seen` collects the auth headers sent."""
    opts: dict[str, Any] = {"base_url": base_url, "max_retries": 0, "timeout": 30.0, **kwargs}
    if style == "x-api-key":
        # What 1.x SDKs send for api_key=: X-Api-Key only, no Authorization.
        opts.update(api_key=key, default_headers={"Authorization": anthropic.omit, "X-Api-Key": key})
    elif style == "bearer-auth-token":
        opts.update(auth_token=key)
    elif style == "sdk-api-key":
        opts.update(api_key=key)
    else:
        raise ValueError(style)
    if seen is not None:

        def record(request: Any) -> None:
            seen.append(
                {k.lower(): v for k, v in request.headers.items() if k.lower() in ("x-api-key", "authorization")}
            )

        opts["http_client"] = anthropic.DefaultHttpxClient(event_hooks={"request": [record]})
    return anthropic.Anthropic(**opts)


def assert_auth_header(seen: list[dict[str, str]], style: str, key: str) -> None:
    assert seen, "no request went out"
    for h in seen:
        if style == "x-api-key":
            assert h == {"x-api-key": key}, h
        elif style == "bearer-auth-token":
            assert h == {"authorization": f"Bearer {key}"}, h
        else:
            assert h in ({"x-api-key": key}, {"authorization": f"Bearer {key}"}), h


@pytest.fixture
def client(gateway_url: str, api_key: str) -> Iterator[anthropic.Anthropic]:
    # No SDK retries: every retry seen in these tests is the gateway's.
    with make_client(gateway_url, api_key) as c:
        yield c


def headers(key: str = "test-key", **extra: str) -> dict[str, str]:
    return {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION, **extra}


def current(body: dict[str, Any]) -> dict[str, Any]:
    return body["conversationState"]["currentMessage"]["userInputMessage"]


def history(body: dict[str, Any]) -> list[dict[str, Any]]:
    return body["conversationState"].get("history", [])


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def blocks(content: list[Any]) -> list[dict[str, Any]]:
    """Content blocks (SDK objects or dicts) reduced to the keys of the contract."""
    out = []
    for b in content:
        d = b if isinstance(b, dict) else b.model_dump()
        if d["type"] == "text":
            out.append({"type": "text", "text": d["text"]})
        elif d["type"] == "tool_use":
            out.append({"type": "tool_use", "id": d["id"], "name": d["name"], "input": d["input"]})
        else:
            out.append(d)
    return out


def expected_blocks(text: str, *calls: tuple[str, str, str]) -> list[dict[str, Any]]:
    """The answer's content: one text block (when there is text), then a tool_use per call."""
    out: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for id_, name, args in calls:
        out.append({"type": "tool_use", "id": id_, "name": name, "input": json.loads(args)})
    return out


def assert_usage(usage: Any, *, output_positive: bool = True) -> None:
    assert usage is not None, "usage is missing"
    i, o = usage.input_tokens, usage.output_tokens
    assert type(i) is int and type(o) is int, (i, o)
    assert i > 0, usage
    assert o > 0 if output_positive else o >= 0, usage


def assert_error_body(body: Any, error_type: str | None = None) -> dict[str, Any]:
    """`{"type": "error", "error": {"type", "message"}}`, as the Anthropic API answers errors."""
    assert isinstance(body, dict), body
    assert body.get("type") == "error", body
    err = body.get("error")
    assert isinstance(err, dict), body
    assert isinstance(err.get("type"), str) and err["type"], body
    assert isinstance(err.get("message"), str) and err["message"], body
    if error_type is not None:
        assert err["type"] == error_type, body
    return err


def assert_request_id(resp: Any) -> str:
    rid = resp.headers.get("request-id")
    assert rid, f"no request-id header in {dict(resp.headers)}"
    return rid


def assert_json_error(resp: httpx.Response, status: int, error_type: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    ctype = resp.headers.get("content-type", "")
    assert ctype.startswith("application/json"), f"content-type {ctype!r}, body {resp.text!r}"
    assert_request_id(resp)
    return assert_error_body(resp.json(), error_type)


# --- event streams -----------------------------------------------------------------------------


def parse_sse(lines: list[str]) -> list[tuple[str | None, str]]:
    """(event name, data) of each SSE event in these lines; a trailing unterminated event counts."""
    events: list[tuple[str | None, str]] = []
    name: str | None = None
    data: list[str] = []
    for line in lines + [""]:
        if line == "":
            if name is not None or data:
                events.append((name, "\n".join(data)))
            name, data = None, []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
    return events


def check_stream(events: list[dict[str, Any]], *, complete: bool = True) -> list[dict[str, Any]]:
    """Check the event order of a Messages stream (pings skipped) and rebuild its blocks.

    Order: message_start, then per block content_block_start, content_block_delta+,
    content_block_stop (indexes 0, 1, 2, ...), then message_delta and message_stop. With
    `complete=False` the stream may stop anywhere (a failed stream: checked up to where it ends).
    Returns the blocks as [{"type", "start", "text" | "json"}].
    """
    evs = [e for e in events if e.get("type") != "ping"]
    names = [e.get("type") for e in evs]
    assert evs and evs[0]["type"] == "message_start", names
    out: list[dict[str, Any]] = []
    open_block: dict[str, Any] | None = None
    i = 1
    while i < len(evs):
        e = evs[i]
        t = e["type"]
        if open_block is None:
            if t == "content_block_start":
                assert e["index"] == len(out), f"block index {e['index']}, expected {len(out)}: {names}"
                cb = e["content_block"]
                open_block = {"type": cb["type"], "start": cb, "text": "", "json": "", "deltas": 0}
                out.append(open_block)
            elif t == "message_delta":
                rest = [x["type"] for x in evs[i + 1 :]]
                assert rest == ["message_stop"], f"after message_delta: {rest} ({names})"
                break
            else:
                pytest.fail(f"unexpected {t} between blocks: {names}")
        else:
            assert e.get("index") == len(out) - 1, f"{t} with index {e.get('index')}: {names}"
            if t == "content_block_delta":
                d = e["delta"]
                if open_block["type"] == "text":
                    assert d["type"] == "text_delta", e
                    open_block["text"] += d["text"]
                elif open_block["type"] == "tool_use":
                    assert d["type"] == "input_json_delta", e
                    open_block["json"] += d["partial_json"]
                open_block["deltas"] += 1
            elif t == "content_block_stop":
                assert open_block["deltas"] >= 1, f"block {e['index']} has no delta: {names}"
                open_block = None
            else:
                pytest.fail(f"unexpected {t} inside block {e.get('index')}: {names}")
        i += 1
    else:
        if complete:
            pytest.fail(f"the stream has no message_delta/message_stop: {names}")
    for b in out:
        if b["type"] == "text":
            assert b["start"].get("text", "") == "", b["start"]
        elif b["type"] == "tool_use":
            assert b["start"].get("input") == {}, b["start"]
            assert b["start"].get("id") and b["start"].get("name"), b["start"]
    return out


def stream_blocks(out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Blocks rebuilt by check_stream in the shape of `blocks()` (tool input JSON parsed)."""
    res = []
    for b in out:
        if b["type"] == "text":
            res.append({"type": "text", "text": b["text"]})
        elif b["type"] == "tool_use":
            res.append(
                {"type": "tool_use", "id": b["start"]["id"], "name": b["start"]["name"], "input": json.loads(b["json"])}
            )
        else:
            res.append({"type": b["type"]})
    return res


def sdk_events(stream: Any) -> list[dict[str, Any]]:
    return [ev.model_dump() for ev in stream]


def message_delta(events: list[dict[str, Any]]) -> dict[str, Any]:
    deltas = [e for e in events if e["type"] == "message_delta"]
    assert len(deltas) == 1, deltas
    return deltas[0]


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


# --- plain answers ---------------------------------------------------------------------------


@pytest.mark.parametrize("model,kiro_model", MODEL_ALIASES, ids=[m for m, _ in MODEL_ALIASES])
def test_non_stream_text_usage_and_model_names(client, mock, model, kiro_model):
    text = mock.reply_text("Bonjour ! ", "Café crème, ", "日本語のテキスト ", "and emoji 🎉🚀.")
    r = client.messages.create(
        model=model, max_tokens=MAX_TOKENS, messages=[user("Say hello in three languages")]
    )
    assert r.id.startswith("msg_"), r.id
    assert r.type == "message"
    assert r.role == "assistant"
    assert r.model == model
    assert blocks(r.content) == [{"type": "text", "text": text}]
    assert r.stop_reason == "end_turn"
    assert r.stop_sequence is None
    assert_usage(r.usage)

    assert len(mock.chat_requests()) == 1
    body = mock.last_chat()
    assert current(body)["modelId"] == kiro_model
    assert "Say hello in three languages" in current(body)["content"]


@pytest.mark.parametrize("style", AUTH_STYLES)
def test_auth_styles(gateway_url, api_key, mock, style):
    text = mock.reply_text("Authentifié ✅")
    seen: list[dict[str, str]] = []
    with make_client(gateway_url, api_key, style, seen=seen) as c:
        r = c.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=[user("hi")])
    assert blocks(r.content) == [{"type": "text", "text": text}]
    assert_auth_header(seen, style, api_key)


def test_raw_response_has_request_id(client, mock):
    text = mock.reply_text("ok ", "👍")
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=MAX_TOKENS, messages=[user("hi")])
    assert raw.status_code == 200
    assert_request_id(raw)
    msg = raw.parse()
    assert blocks(msg.content) == [{"type": "text", "text": text}]
    assert msg._request_id == raw.headers["request-id"]


def test_stream_text_events(client, mock):
    text = mock.reply_text("Hel", "lo, ", "wörld ", "— ", "日本 ", "👋🏽", "!")
    events = sdk_events(
        client.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=[user("Greet me")], stream=True)
    )
    out = check_stream(events)
    assert stream_blocks(out) == [{"type": "text", "text": text}]
    start = events[0]["message"]
    assert start["id"].startswith("msg_"), start
    assert start["type"] == "message" and start["role"] == "assistant", start
    assert start["model"] == MODEL, start
    assert start["content"] == [], start
    assert type(start["usage"]["input_tokens"]) is int, start
    md = message_delta(events)
    assert md["delta"]["stop_reason"] == "end_turn", md
    assert md["delta"].get("stop_sequence") is None, md
    out_tokens = md["usage"]["output_tokens"]
    assert type(out_tokens) is int and out_tokens > 0, md
    assert events[-1]["type"] == "message_stop"
    assert current(mock.last_chat())["modelId"] == KIRO_MODEL


def test_stream_text_then_tool_calls_events(client, mock):
    mock.reply(
        [
            mock.text("Checking "),
            mock.text("the météo…"),
            mock.tool_call("tooluse_1", "get_weather", PARIS_ARGS, fragment=4),
            mock.tool_call("tooluse_2", "get_time", TRICKY_ARGS, fragment=3),
        ]
    )
    events = sdk_events(
        client.messages.create(
            model=MODEL,
            max_tokens=MAX_TOKENS,
            messages=[user("Weather and time?")],
            tools=[GET_WEATHER, GET_TIME],
            stream=True,
        )
    )
    out = check_stream(events)
    assert [b["type"] for b in out] == ["text", "tool_use", "tool_use"]
    assert stream_blocks(out) == expected_blocks(
        "Checking the météo…", ("tooluse_1", "get_weather", PARIS_ARGS), ("tooluse_2", "get_time", TRICKY_ARGS)
    )
    md = message_delta(events)
    assert md["delta"]["stop_reason"] == "tool_use", md
    assert md["usage"]["output_tokens"] > 0, md


def test_stream_tool_call_only(client, mock):
    mock.reply([mock.tool_call("tooluse_1", "get_weather", TRICKY_ARGS, fragment=2)])
    events = sdk_events(
        client.messages.create(
            model=MODEL, max_tokens=MAX_TOKENS, messages=[user("weather?")], tools=[GET_WEATHER], stream=True
        )
    )
    out = check_stream(events)
    rebuilt = [b for b in stream_blocks(out) if b != {"type": "text", "text": ""}]
    assert rebuilt == expected_blocks("", ("tooluse_1", "get_weather", TRICKY_ARGS))
    assert message_delta(events)["delta"]["stop_reason"] == "tool_use"


def test_stream_wire_format(raw, mock):
    """The raw SSE: content type, request-id, `event:` names equal to the data's `type`."""
    text = mock.reply_text("Wire ", "fórmat ", "日本 ", "🔌")
    with raw.stream(
        "POST",
        "/v1/messages",
        headers=headers(),
        json={"model": MODEL, "max_tokens": MAX_TOKENS, "messages": [user("wire")], "stream": True},
    ) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers.get("content-type", "").startswith("text/event-stream"), resp.headers
        assert_request_id(resp)
        lines = list(resp.iter_lines())
    sse = parse_sse(lines)
    assert sse, lines
    events = []
    for name, data in sse:
        ev = json.loads(data)
        assert name == ev["type"], f"event: {name} carries data of type {ev['type']}"
        events.append(ev)
    out = check_stream(events)
    assert stream_blocks(out) == [{"type": "text", "text": text}]
    assert events[-1]["type"] == "message_stop"


def test_stream_helper_text(client, mock):
    text = mock.reply_text("Str", "eam ", "hélper ", "日本 ", "🌊")
    with client.messages.stream(model=MODEL, max_tokens=MAX_TOKENS, messages=[user("stream please")]) as s:
        joined = "".join(s.text_stream)
        final = s.get_final_message()
    assert joined == text
    assert blocks(final.content) == [{"type": "text", "text": text}]
    assert final.stop_reason == "end_turn"
    assert final.model == MODEL
    assert final.id.startswith("msg_")
    assert_usage(final.usage)


def test_stream_helper_final_message_equals_non_stream(client, mock):
    script = [
        mock.text("Let me check… "),
        mock.text("один момент."),
        mock.tool_call("tooluse_1", "get_weather", PARIS_ARGS),
        mock.tool_call("tooluse_2", "get_time", TRICKY_ARGS, fragment=5),
    ]
    expected = expected_blocks(
        "Let me check… один момент.",
        ("tooluse_1", "get_weather", PARIS_ARGS),
        ("tooluse_2", "get_time", TRICKY_ARGS),
    )
    req = dict(
        model=MODEL, max_tokens=MAX_TOKENS, messages=[user("Weather and time in Paris?")], tools=[GET_WEATHER, GET_TIME]
    )
    mock.reply(script)
    r = client.messages.create(**req)
    mock.reply(script)
    with client.messages.stream(**req) as s:
        final = s.get_final_message()
    assert blocks(r.content) == expected
    assert blocks(final.content) == expected
    assert r.stop_reason == final.stop_reason == "tool_use"
    assert r.stop_sequence is None and final.stop_sequence is None


def test_async_client_stream(gateway_url, api_key, mock):
    text = mock.reply_text("Async ", "naïve ", "日本 ", "✨")

    async def run() -> tuple[list[dict[str, Any]], str]:
        async with anthropic.AsyncAnthropic(base_url=gateway_url, api_key=api_key, max_retries=0, timeout=30.0) as c:
            stream = await c.messages.create(
                model=MODEL, max_tokens=MAX_TOKENS, messages=[user("async please")], stream=True
            )
            events = [ev.model_dump() async for ev in stream]
            mock.reply_text("Async ", "naïve ", "日本 ", "✨")
            async with c.messages.stream(model=MODEL, max_tokens=MAX_TOKENS, messages=[user("again")]) as s:
                joined = "".join([t async for t in s.text_stream])
            return events, joined

    events, joined = asyncio.run(run())
    assert stream_blocks(check_stream(events)) == [{"type": "text", "text": text}]
    assert joined == text


# --- tool calls ------------------------------------------------------------------------------


def test_non_stream_tool_use(client, mock):
    mock.reply(
        [
            mock.text("Let me check… "),
            mock.text("один момент."),
            mock.tool_call("tooluse_1", "get_weather", PARIS_ARGS),
            mock.tool_call("tooluse_2", "get_time", TRICKY_ARGS, fragment=5),
        ]
    )
    r = client.messages.create(
        model=MODEL,
        max_tokens=MAX_TOKENS,
        messages=[user("Weather and time in Paris?")],
        tools=[GET_WEATHER, GET_TIME],
    )
    assert r.stop_reason == "tool_use"
    assert r.stop_sequence is None
    assert blocks(r.content) == expected_blocks(
        "Let me check… один момент.",
        ("tooluse_1", "get_weather", PARIS_ARGS),
        ("tooluse_2", "get_time", TRICKY_ARGS),
    )
    assert r.content[2].input == TRICKY_ARGS_OBJ
    assert_usage(r.usage)

    ctx = current(mock.last_chat())["userInputMessageContext"]
    assert [t["toolSpecification"]["name"] for t in ctx["tools"]] == ["get_weather", "get_time"]
    spec = ctx["tools"][0]["toolSpecification"]
    assert spec["description"] == "Get the current weather for a city."
    assert spec["inputSchema"]["json"]["properties"]["city"]["type"] == "string"
    assert spec["inputSchema"]["json"]["required"] == ["city"]


def test_non_stream_tool_use_only(client, mock):
    mock.reply([mock.tool_call("tooluse_1", "get_weather", PARIS_ARGS)])
    r = client.messages.create(
        model=MODEL, max_tokens=MAX_TOKENS, messages=[user("weather?")], tools=[GET_WEATHER]
    )
    assert r.stop_reason == "tool_use"
    got = [b for b in blocks(r.content) if b != {"type": "text", "text": ""}]
    assert got == expected_blocks("", ("tooluse_1", "get_weather", PARIS_ARGS))


TOOL_USE_TURN = {
    "role": "assistant",
    "content": [{"type": "tool_use", "id": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}],
}


def test_tool_result_round_trip(client, mock):
    text = mock.reply_text("It is 18 °C in Paris ", "☀️.")
    r = client.messages.create(
        model=MODEL,
        max_tokens=MAX_TOKENS,
        messages=[
            user("weather?"),
            TOOL_USE_TURN,
            user([{"type": "tool_result", "tool_use_id": "tooluse_1", "content": "18 C"}]),
        ],
        tools=[GET_WEATHER],
    )
    assert blocks(r.content) == [{"type": "text", "text": text}]
    assert r.stop_reason == "end_turn"

    body = mock.last_chat()
    hist = history(body)
    assert len(hist) == 2, hist
    assert set(hist[0]) == {"userInputMessage"}, hist[0]
    assert "weather?" in hist[0]["userInputMessage"]["content"]
    assert set(hist[1]) == {"assistantResponseMessage"}, hist[1]
    assert hist[1]["assistantResponseMessage"]["toolUses"] == [
        {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    cur = current(body)
    assert cur["modelId"] == KIRO_MODEL
    ctx = cur["userInputMessageContext"]
    assert ctx["toolResults"] == [{"toolUseId": "tooluse_1", "content": [{"text": "18 C"}], "status": "success"}]
    assert ctx["tools"][0]["toolSpecification"]["name"] == "get_weather"


def test_tool_result_error_and_block_list(client, mock):
    text = mock.reply_text("Lyon failed, ", "Tokyo worked.")
    r = client.messages.create(
        model=MODEL,
        max_tokens=MAX_TOKENS,
        messages=[
            user("weather in Lyon and time in Tokyo?"),
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking both."},
                    {"type": "tool_use", "id": "tooluse_1", "name": "get_weather", "input": {"city": "Lyon"}},
                    {"type": "tool_use", "id": "tooluse_2", "name": "get_time", "input": {"tz": "Asia/Tokyo"}},
                ],
            },
            user(
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": "tooluse_1",
                        "content": "city not found: « Lyon »",
                        "is_error": True,
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "tooluse_2",
                        "content": [{"type": "text", "text": "14:05 JST"}, {"type": "text", "text": "日本 🇯🇵"}],
                    },
                ]
            ),
        ],
        tools=[GET_WEATHER, GET_TIME],
    )
    assert blocks(r.content) == [{"type": "text", "text": text}]
    body = mock.last_chat()
    hist = history(body)
    assert hist[-1]["assistantResponseMessage"]["toolUses"] == [
        {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Lyon"}},
        {"toolUseId": "tooluse_2", "name": "get_time", "input": {"tz": "Asia/Tokyo"}},
    ]
    assert "Checking both." in hist[-1]["assistantResponseMessage"]["content"]
    assert current(body)["userInputMessageContext"]["toolResults"] == [
        {"toolUseId": "tooluse_1", "content": [{"text": "city not found: « Lyon »"}], "status": "error"},
        {"toolUseId": "tooluse_2", "content": [{"text": "14:05 JST\n日本 🇯🇵"}], "status": "success"},
    ]


# --- request translation ---------------------------------------------------------------------


def test_image_base64(client, mock):
    b64 = base64.b64encode(png_1x1()).decode()
    text = mock.reply_text("A single ", "green-ish pixel.")
    r = client.messages.create(
        model=MODEL,
        max_tokens=MAX_TOKENS,
        messages=[
            user(
                [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64}},
                    {"type": "text", "text": "What is in this picture? ¿Qué es?"},
                ]
            )
        ],
    )
    assert blocks(r.content) == [{"type": "text", "text": text}]
    cur = current(mock.last_chat())
    assert cur["images"] == [{"format": "png", "source": {"bytes": b64}}]
    assert "What is in this picture? ¿Qué es?" in cur["content"]


SYSTEM_BLOCKS = [
    {"type": "text", "text": "You are terse."},
    {"type": "text", "text": "Réponds en français, 日本語も可.", "cache_control": {"type": "ephemeral"}},
]
SYSTEM_JOINED = "You are terse.\nRéponds en français, 日本語も可."


def test_system_blocks_with_cache_control_single_turn(client, mock):
    text = mock.reply_text("D'accord.")
    r = client.messages.create(
        model=MODEL, max_tokens=MAX_TOKENS, system=SYSTEM_BLOCKS, messages=[user("Salut")]
    )
    assert blocks(r.content) == [{"type": "text", "text": text}]
    body = mock.last_chat()
    assert history(body) == []
    content = current(body)["content"]
    assert content.startswith(SYSTEM_JOINED), content
    assert "Salut" in content[len(SYSTEM_JOINED) :], content


def test_system_blocks_with_cache_control_multi_turn(client, mock):
    text = mock.reply_text("Fine.")
    r = client.messages.create(
        model=MODEL,
        max_tokens=MAX_TOKENS,
        system=SYSTEM_BLOCKS,
        messages=[
            user([{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]),
            {"role": "assistant", "content": "Hello!"},
            user("How are you?"),
        ],
    )
    assert blocks(r.content) == [{"type": "text", "text": text}]
    body = mock.last_chat()
    hist = history(body)
    assert len(hist) == 2, hist
    first = hist[0]["userInputMessage"]
    assert first["content"].startswith(SYSTEM_JOINED), first
    assert "Hi" in first["content"][len(SYSTEM_JOINED) :], first
    assert first["modelId"] == KIRO_MODEL
    assert hist[1]["assistantResponseMessage"]["content"] == "Hello!"
    assert current(body)["content"] == "How are you?"
    assert current(body)["modelId"] == KIRO_MODEL


def test_system_string(client, mock):
    text = mock.reply_text("Oui.")
    r = client.messages.create(
        model=MODEL, max_tokens=MAX_TOKENS, system="Be brief, s'il te plaît.", messages=[user("Q?")]
    )
    assert blocks(r.content) == [{"type": "text", "text": text}]
    content = current(mock.last_chat())["content"]
    assert content.startswith("Be brief, s'il te plaît."), content
    assert "Q?" in content, content


# --- count_tokens ----------------------------------------------------------------------------


def test_count_tokens(client, mock):
    msgs = [user("What's the weather in Paris? Quel temps fait-il à Paris ? 日本")]
    base = client.messages.count_tokens(model=MODEL, messages=msgs)
    assert type(base.input_tokens) is int and base.input_tokens > 0, base
    long_system = "You are a meticulous meteorologist who explains every detail. " * 50
    with_system = client.messages.count_tokens(model=MODEL, messages=msgs, system=long_system)
    with_tools = client.messages.count_tokens(model=MODEL, messages=msgs, tools=[GET_WEATHER, GET_TIME])
    with_blocks = client.messages.count_tokens(
        model=MODEL,
        messages=msgs,
        system=[{"type": "text", "text": long_system, "cache_control": {"type": "ephemeral"}}],
    )
    assert with_system.input_tokens > base.input_tokens, (base, with_system)
    assert with_tools.input_tokens > base.input_tokens, (base, with_tools)
    assert with_blocks.input_tokens > base.input_tokens, (base, with_blocks)
    assert mock.chat_requests() == [], "count_tokens must not call the upstream"


def test_count_tokens_raw(raw, mock):
    r = raw.post(
        "/v1/messages/count_tokens",
        headers=headers(),
        json={"model": MODEL, "messages": [user("hello")]},
    )
    assert r.status_code == 200, r.text
    assert_request_id(r)
    body = r.json()
    assert type(body["input_tokens"]) is int and body["input_tokens"] > 0, body
    assert mock.chat_requests() == []


# --- models ----------------------------------------------------------------------------------


def test_models_list_raw(raw, mock):
    r = raw.get("/v1/models", headers=headers())
    assert r.status_code == 200, r.text
    assert_request_id(r)
    body = r.json()
    data = body["data"]
    assert isinstance(data, list) and data, body
    for m in data:
        assert m["type"] == "model", m
        assert isinstance(m["id"], str) and m["id"], m
        assert isinstance(m["display_name"], str) and m["display_name"], m
        assert isinstance(m["created_at"], str) and m["created_at"], m
    assert body["has_more"] is False, body
    assert body["first_id"] == data[0]["id"], body
    assert body["last_id"] == data[-1]["id"], body
    assert KIRO_MODEL in [m["id"] for m in data]


def test_models_list_sdk(client, mock):
    models = list(client.models.list())
    ids = [m.id for m in models]
    assert KIRO_MODEL in ids, ids
    assert all(m.type == "model" and m.display_name for m in models), models


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("style", AUTH_STYLES)
@pytest.mark.parametrize("call", ["messages", "stream", "count_tokens", "models"])
def test_wrong_key_is_authentication_error(gateway_url, mock, style, call):
    seen: list[dict[str, str]] = []
    c = make_client(gateway_url, "wrong-key", style, seen=seen)
    with c, pytest.raises(anthropic.AuthenticationError) as info:
        if call == "messages":
            c.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=[user("hi")])
        elif call == "stream":
            for _ in c.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=[user("hi")], stream=True):
                pass
        elif call == "count_tokens":
            c.messages.count_tokens(model=MODEL, messages=[user("hi")])
        else:
            c.models.list()
    assert_auth_header(seen, style, "wrong-key")
    assert info.value.status_code == 401
    assert_request_id(info.value.response)
    body = info.value.response.json()
    if call == "models":
        # /v1/models is shared with the OpenAI API: its error shape is checked on its own below.
        assert body["error"]["type"] == "authentication_error", body
    else:
        assert_error_body(body, "authentication_error")
    assert mock.chat_requests() == []


@pytest.mark.parametrize(
    "hdrs", [headers("wrong-key"), {"anthropic-version": ANTHROPIC_VERSION}], ids=["wrong-key", "no-key"]
)
def test_models_auth_error_is_anthropic_shaped(raw, mock, hdrs):
    """With `anthropic-version`, /v1/models answers in the Anthropic shape: its errors too."""
    assert_json_error(raw.get("/v1/models", headers=hdrs), 401, "authentication_error")


@pytest.mark.parametrize(
    "hdrs",
    [{}, {"Authorization": "Bearer"}, {"x-api-key": ""}],
    ids=["no-header", "bearer-without-key", "empty-x-api-key"],
)
def test_missing_key_is_401(raw, mock, hdrs):
    r = raw.post(
        "/v1/messages",
        json={"model": MODEL, "max_tokens": MAX_TOKENS, "messages": [user("hi")]},
        headers={"anthropic-version": ANTHROPIC_VERSION, **hdrs},
    )
    assert_json_error(r, 401, "authentication_error")
    assert mock.chat_requests() == []


@pytest.mark.parametrize("hdrs", [headers(), {"Authorization": "Bearer test-key"}], ids=["x-api-key", "bearer"])
def test_missing_max_tokens_is_400(raw, mock, hdrs):
    r = raw.post("/v1/messages", headers=hdrs, json={"model": MODEL, "messages": [user("hi")]})
    assert_json_error(r, 400, "invalid_request_error")
    assert mock.chat_requests() == []


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
def test_bad_json_body_is_400(raw, mock, path):
    r = raw.post(path, content=b"{not json", headers=headers(**{"Content-Type": "application/json"}))
    assert_json_error(r, 400, "invalid_request_error")
    assert mock.chat_requests() == []


def test_unknown_model_is_400(client, mock):
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="gpt-4o", max_tokens=MAX_TOKENS, messages=[user("hi")])
    assert info.value.status_code == 400
    assert_request_id(info.value.response)
    assert_error_body(info.value.response.json(), "invalid_request_error")


FAULTS = {
    "reset": {"type": "reset_at", "frame": 3},
    "exception": {"type": "exception_at", "frame": 2, "kind": "InternalServerException", "message": "boom"},
}
FAULT_TEXT = ["Once ", "upon ", "a ", "time, ", "in ", "Zürich, ", "日本…"]


@pytest.mark.parametrize("api", ["events", "helper"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_mid_stream_failure_raises_api_error(client, mock, fault, api):
    mock.reply([mock.text(t) for t in FAULT_TEXT], faults=[FAULTS[fault]])
    received: list[Any] = []
    req = dict(model=MODEL, max_tokens=MAX_TOKENS, messages=[user("tell a story")])
    with pytest.raises(anthropic.APIError):
        if api == "events":
            for ev in client.messages.create(**req, stream=True):
                received.append(ev.model_dump())
        else:
            with client.messages.stream(**req) as s:
                for ev in s:
                    received.append(ev.model_dump())
    types = [e["type"] for e in received]
    assert "message_stop" not in types, types
    assert not [e for e in received if e["type"] == "message_delta" and e["delta"].get("stop_reason")], types
    if api == "events" and received:
        out = check_stream(received, complete=False)
        text = "".join(b["text"] for b in out if b["type"] == "text")
        assert "".join(FAULT_TEXT).startswith(text), text


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_mid_stream_failure_raw_sse(raw, mock, fault):
    mock.reply([mock.text(t) for t in FAULT_TEXT], faults=[FAULTS[fault]])
    lines: list[str] = []
    with raw.stream(
        "POST",
        "/v1/messages",
        headers=headers(),
        json={"model": MODEL, "max_tokens": MAX_TOKENS, "messages": [user("tell a story")], "stream": True},
    ) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers.get("content-type", "").startswith("text/event-stream")
        assert_request_id(resp)
        try:
            for line in resp.iter_lines():
                lines.append(line)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            pass  # judged below by what arrived before the connection ended
    sse = [(n, d) for n, d in parse_sse(lines) if n != "ping"]
    names = [n for n, _ in sse]
    assert "error" in names, f"no error event in the stream: {lines}"
    assert names[-1] == "error", f"the error event must be the last one: {lines}"
    assert "message_stop" not in names, f"a failed stream must not end with message_stop: {lines}"
    for n, d in sse:
        if n == "error":
            assert_error_body(json.loads(d))
    events = [json.loads(d) for n, d in sse if n != "error"]
    for e in events:
        if e["type"] == "message_delta":
            assert not e["delta"].get("stop_reason"), f"stop_reason on a failed stream: {lines}"
    out = check_stream(events, complete=False)
    text = "".join(b["text"] for b in out if b["type"] == "text")
    assert "".join(FAULT_TEXT).startswith(text), text


def test_upstream_429_every_attempt_is_rate_limit_error(client, mock):
    for _ in range(5):
        mock.reply_status(429, RATE_LIMITED_BODY)
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=[user("hi")])
    assert info.value.status_code == 429
    assert_request_id(info.value.response)
    assert_error_body(info.value.response.json(), "rate_limit_error")
    assert len(mock.chat_requests()) >= 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_upstream_429_once_is_retried_by_gateway(client, mock, stream):
    mock.reply_status(429, RATE_LIMITED_BODY)
    text = mock.reply_text("Second ", "time ", "lucky 🍀")
    req = dict(model=MODEL, max_tokens=MAX_TOKENS, messages=[user("hi")])
    if stream:
        events = sdk_events(client.messages.create(**req, stream=True))
        assert stream_blocks(check_stream(events)) == [{"type": "text", "text": text}]
    else:
        r = client.messages.create(**req)
        assert blocks(r.content) == [{"type": "text", "text": text}]
        assert r.stop_reason == "end_turn"
    assert len(mock.chat_requests()) == 2


def test_request_ids_differ(raw, mock):
    ids = {assert_request_id(raw.get("/v1/models", headers=headers())) for _ in range(3)}
    assert len(ids) == 3, ids


@pytest.mark.parametrize(
    "case",
    ["messages", "stream", "count_tokens", "models", "unauthorized", "bad-json", "missing-max-tokens"],
)
def test_every_response_has_request_id(raw, mock, case):
    mock.reply_text("id ", "please")
    msg = {"model": MODEL, "max_tokens": MAX_TOKENS, "messages": [user("hi")]}
    if case == "messages":
        r = raw.post("/v1/messages", headers=headers(), json=msg)
    elif case == "stream":
        with raw.stream("POST", "/v1/messages", headers=headers(), json={**msg, "stream": True}) as r:
            r.read()
    elif case == "count_tokens":
        r = raw.post("/v1/messages/count_tokens", headers=headers(), json={"model": MODEL, "messages": msg["messages"]})
    elif case == "models":
        r = raw.get("/v1/models", headers=headers())
    elif case == "unauthorized":
        r = raw.post("/v1/messages", headers=headers("wrong-key"), json=msg)
    elif case == "bad-json":
        r = raw.post("/v1/messages", headers=headers(**{"Content-Type": "application/json"}), content=b"[")
    else:
        r = raw.post("/v1/messages", headers=headers(), json={"model": MODEL, "messages": msg["messages"]})
    assert_request_id(r)
    if case in ("messages", "stream", "count_tokens", "models"):
        assert r.status_code == 200, (r.status_code, r.text)
    else:
        assert r.status_code in (400, 401), (r.status_code, r.text)
        assert_error_body(r.json())
