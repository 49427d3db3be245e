"""The real openai Python SDK against the gateway, with the mock Kiro upstream scripted per test."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import zlib
from typing import Any, Iterator

import httpx
import openai
import pytest

MODEL = "claude-sonnet-4-5"  # what clients send
KIRO_MODEL = "claude-sonnet-4.5"  # what the upstream must receive

GET_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}
GET_TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the local time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {"tz": {"type": "string"}},
            "required": ["tz"],
        },
    },
}

# Compact JSON with sorted keys and raw non-ASCII: the same text whether the gateway passes the
# arguments through or re-serialises them compactly. Has backslashes, quotes, \n, \t, é, 日本, emoji.
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


def assert_usage(usage: Any) -> None:
    assert usage is not None, "usage is missing"
    p, c, t = usage.prompt_tokens, usage.completion_tokens, usage.total_tokens
    assert all(type(x) is int for x in (p, c, t)), (p, c, t)
    assert p >= 0 and c > 0, (p, c, t)
    assert t == p + c, (p, c, t)


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


def assert_json_error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    ctype = resp.headers.get("content-type", "")
    assert ctype.startswith("application/json"), f"content-type {ctype!r}, body {resp.text!r}"
    return assert_error_shape(resp.json())


def choice_chunks(chunks: list[Any]) -> list[Any]:
    return [ch for ch in chunks if ch.choices]


def joined_content(chunks: list[Any]) -> str:
    return "".join(c.delta.content or "" for ch in chunks for c in ch.choices)


def assemble_tool_calls(chunks: list[Any]) -> list[dict[str, Any]]:
    """Tool calls rebuilt from stream deltas the way the SDK's helpers do (by `index`)."""
    calls: dict[int, dict[str, Any]] = {}
    for ch in chunks:
        for choice in ch.choices:
            for tc in choice.delta.tool_calls or []:
                assert tc.index is not None, tc
                fn = tc.function
                if tc.index not in calls:
                    assert tc.id, f"first delta of tool call {tc.index} has no id: {tc}"
                    assert fn is not None and fn.name, f"first delta of tool call {tc.index} has no name: {tc}"
                    assert tc.type in (None, "function"), tc
                    calls[tc.index] = {"id": tc.id, "name": fn.name, "arguments": "", "fragments": 0}
                else:
                    if tc.id:
                        assert tc.id == calls[tc.index]["id"], tc
                    if fn is not None and fn.name:
                        assert fn.name == calls[tc.index]["name"], tc
                if fn is not None and fn.arguments:
                    calls[tc.index]["arguments"] += fn.arguments
                    calls[tc.index]["fragments"] += 1
    assert sorted(calls) == list(range(len(calls))), f"tool call indexes {sorted(calls)}"
    return [calls[i] for i in sorted(calls)]


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


def test_non_stream_text_usage_and_model_names(client, mock):
    text = mock.reply_text("Bonjour ! ", "Café crème, ", "日本語のテキスト ", "and emoji 🎉🚀.")
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello in three languages"}]
    )
    assert r.object == "chat.completion"
    assert r.model == MODEL
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == text
    assert not choice.message.tool_calls
    assert choice.finish_reason == "stop"
    assert_usage(r.usage)

    body = mock.last_chat()
    assert current(body)["modelId"] == KIRO_MODEL
    assert "Say hello in three languages" in current(body)["content"]
    assert len(mock.chat_requests()) == 1


def test_stream_text(client, mock):
    text = mock.reply_text("Hel", "lo, ", "wörld ", "— ", "日本 ", "👋🏽", "!")
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Greet me"}], stream=True
    )
    chunks = list(stream)
    with_choices = choice_chunks(chunks)
    assert with_choices, "no chunk with choices"
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    assert all(ch.model == MODEL for ch in chunks), {ch.model for ch in chunks}
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert joined_content(chunks) == text
    finishes = [c.finish_reason for ch in with_choices for c in ch.choices if c.finish_reason]
    assert finishes == ["stop"], finishes
    assert with_choices[-1].choices[0].finish_reason == "stop"
    assert current(mock.last_chat())["modelId"] == KIRO_MODEL


def test_stream_include_usage(client, mock):
    text = mock.reply_text("Usage ", "is ", "counted ", "ça va.")
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Count"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert joined_content(chunks) == text
    last = chunks[-1]
    assert last.choices == [], f"the usage chunk must have no choices: {last}"
    assert_usage(last.usage)
    assert choice_chunks(chunks)[-1].choices[0].finish_reason == "stop"


def test_async_client_stream(api_base, api_key, mock):
    text = mock.reply_text("Async ", "naïve ", "日本 ", "✨")

    async def run() -> list[Any]:
        async with openai.AsyncOpenAI(base_url=api_base, api_key=api_key, max_retries=0, timeout=30.0) as c:
            stream = await c.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "async please"}], stream=True
            )
            return [ch async for ch in stream]

    chunks = asyncio.run(run())
    assert choice_chunks(chunks)[0].choices[0].delta.role == "assistant"
    assert joined_content(chunks) == text
    assert choice_chunks(chunks)[-1].choices[0].finish_reason == "stop"


# --- tool calls ------------------------------------------------------------------------------


def test_non_stream_tool_calls(client, mock):
    mock.reply(
        [
            mock.text("Let me check… "),
            mock.text("один момент."),
            mock.tool_call("tooluse_1", "get_weather", PARIS_ARGS),
            mock.tool_call("tooluse_2", "get_time", TRICKY_ARGS, fragment=5),
        ]
    )
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather and time in Paris?"}],
        tools=[GET_WEATHER, GET_TIME],
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check… один момент."
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 2, calls
    assert [(c.id, c.type, c.function.name) for c in calls] == [
        ("tooluse_1", "function", "get_weather"),
        ("tooluse_2", "function", "get_time"),
    ]
    assert calls[0].function.arguments == PARIS_ARGS
    assert calls[1].function.arguments == TRICKY_ARGS
    assert json.loads(calls[1].function.arguments) == TRICKY_ARGS_OBJ
    assert_usage(r.usage)

    ctx = current(mock.last_chat())["userInputMessageContext"]
    assert [t["toolSpecification"]["name"] for t in ctx["tools"]] == ["get_weather", "get_time"]
    spec = ctx["tools"][0]["toolSpecification"]
    assert spec["description"] == "Get the current weather for a city."
    assert spec["inputSchema"]["json"]["properties"]["city"]["type"] == "string"


def test_stream_tool_calls(client, mock):
    mock.reply(
        [
            mock.text("Checking "),
            mock.text("the météo."),
            mock.tool_call("tooluse_1", "get_weather", PARIS_ARGS, fragment=4),
            mock.tool_call("tooluse_2", "get_time", TRICKY_ARGS, fragment=3),
        ]
    )
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Weather and time?"}],
            tools=[GET_WEATHER, GET_TIME],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    with_choices = choice_chunks(chunks)
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert joined_content(chunks) == "Checking the météo."
    calls = assemble_tool_calls(chunks)
    assert [(c["id"], c["name"]) for c in calls] == [
        ("tooluse_1", "get_weather"),
        ("tooluse_2", "get_time"),
    ]
    assert calls[0]["arguments"] == PARIS_ARGS
    assert calls[1]["arguments"] == TRICKY_ARGS
    finishes = [c.finish_reason for ch in with_choices for c in ch.choices if c.finish_reason]
    assert finishes == ["tool_calls"], finishes
    assert with_choices[-1].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].choices == []
    assert_usage(chunks[-1].usage)


def test_sdk_stream_helper_accumulates_tool_call(client, mock):
    mock.reply([mock.tool_call("tooluse_1", "get_weather", TRICKY_ARGS, fragment=2)])
    with client.chat.completions.stream(
        model=MODEL, messages=[{"role": "user", "content": "weather?"}], tools=[GET_WEATHER]
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.id == "tooluse_1"
    assert call.function.name == "get_weather"
    assert call.function.arguments == TRICKY_ARGS


def test_tool_result_round_trip(client, mock):
    text = mock.reply_text("It is 18 °C in Paris ", "☀️.")
    r = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "What's the weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "tooluse_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": PARIS_ARGS},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "tooluse_1", "content": "18 C"},
        ],
        tools=[GET_WEATHER],
    )
    assert r.choices[0].message.content == text
    assert r.choices[0].finish_reason == "stop"

    body = mock.last_chat()
    hist = history(body)
    assert len(hist) == 2, hist
    assert set(hist[0]) == {"userInputMessage"}, hist[0]
    assert "What's the weather in Paris?" in hist[0]["userInputMessage"]["content"]
    assert set(hist[1]) == {"assistantResponseMessage"}, hist[1]
    assert hist[1]["assistantResponseMessage"]["toolUses"] == [
        {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    cur = current(body)
    assert cur["modelId"] == KIRO_MODEL
    ctx = cur["userInputMessageContext"]
    assert ctx["toolResults"] == [
        {"toolUseId": "tooluse_1", "content": [{"text": "18 C"}], "status": "success"}
    ]
    assert ctx["tools"][0]["toolSpecification"]["name"] == "get_weather"


# --- request translation ---------------------------------------------------------------------


def test_image_data_url(client, mock):
    b64 = base64.b64encode(png_1x1()).decode()
    text = mock.reply_text("A single ", "green-ish pixel.")
    r = client.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture? ¿Qué es?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}},
                ],
            }
        ],
    )
    assert r.choices[0].message.content == text
    cur = current(mock.last_chat())
    assert cur["images"] == [{"format": "png", "source": {"bytes": b64}}]
    assert "What is in this picture? ¿Qué es?" in cur["content"]


def test_multi_turn_with_system(client, mock):
    text = mock.reply_text("Fine.")
    r = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "How are you?"},
        ],
    )
    assert r.choices[0].message.content == text
    body = mock.last_chat()
    hist = history(body)
    assert len(hist) == 2, hist
    first = hist[0]["userInputMessage"]
    assert first["content"].startswith("You are terse."), first
    assert "Hi" in first["content"][len("You are terse.") :], first
    assert first["modelId"] == KIRO_MODEL
    assert hist[1]["assistantResponseMessage"]["content"] == "Hello!"
    assert current(body)["content"] == "How are you?"
    assert current(body)["modelId"] == KIRO_MODEL


def test_models_list(client, mock):
    ids = [m.id for m in client.models.list()]
    assert KIRO_MODEL in ids, ids


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["chat", "models"])
def test_wrong_key_is_authentication_error(api_base, mock, call):
    c = openai.OpenAI(base_url=api_base, api_key="wrong-key", max_retries=0, timeout=30.0)
    with c, pytest.raises(openai.AuthenticationError) as info:
        if call == "chat":
            c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        else:
            c.models.list()
    assert info.value.status_code == 401
    assert_error_shape(info.value.response.json())
    assert mock.chat_requests() == []


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer"}], ids=["no-header", "bearer-without-key"])
def test_missing_key_is_401(raw, mock, headers):
    r = raw.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
    )
    assert_json_error(r, 401)
    assert mock.chat_requests() == []


def test_bad_json_body_is_400_json(raw, mock):
    r = raw.post(
        "/v1/chat/completions",
        content=b"{not json",
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert_json_error(r, 400)
    assert mock.chat_requests() == []


@pytest.mark.parametrize("method,path", [("GET", "/v1/no-such-route"), ("POST", "/v1/chat/nope"), ("GET", "/nope")])
def test_unknown_route_is_404_json(raw, mock, method, path):
    r = raw.request(method, path, headers=auth(), json={} if method == "POST" else None)
    assert_json_error(r, 404)


FAULTS = {
    "reset": {"type": "reset_at", "frame": 3},
    "exception": {"type": "exception_at", "frame": 2, "kind": "InternalServerException", "message": "boom"},
}
FAULT_TEXT = ["Once ", "upon ", "a ", "time, ", "in ", "Zürich, ", "日本…"]


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_mid_stream_failure_raises_api_error(client, mock, fault):
    mock.reply([mock.text(t) for t in FAULT_TEXT], faults=[FAULTS[fault]])
    received = []
    with pytest.raises(openai.APIError):
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "tell a story"}], stream=True
        )
        for ch in stream:
            received.append(ch)
    assert "".join(FAULT_TEXT).startswith(joined_content(received))
    assert all(c.finish_reason is None for ch in received for c in ch.choices)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_mid_stream_failure_raw_sse(raw, mock, fault):
    mock.reply([mock.text(t) for t in FAULT_TEXT], faults=[FAULTS[fault]])
    lines: list[str] = []
    with raw.stream(
        "POST",
        "/v1/chat/completions",
        headers=auth(),
        json={"model": MODEL, "messages": [{"role": "user", "content": "tell a story"}], "stream": True},
    ) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers.get("content-type", "").startswith("text/event-stream")
        try:
            for line in resp.iter_lines():
                lines.append(line)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            pass  # judged below by what arrived before the connection ended
    data = [line[len("data:") :].strip() for line in lines if line.startswith("data:")]
    assert "[DONE]" not in data, f"a failed stream must not end with [DONE]: {lines}"
    events = [json.loads(d) for d in data]
    errors = [e for e in events if "error" in e]
    assert errors, f"no error event in the stream: {lines}"
    assert "error" in events[-1], f"the error event must be the last one: {lines}"
    for e in errors:
        assert isinstance(e["error"], dict) and isinstance(e["error"].get("message"), str), e
    chunks = [e for e in events if "error" not in e]
    for ch in chunks:
        for c in ch.get("choices", []):
            assert c.get("finish_reason") is None, f"finish_reason on a failed stream: {ch}"
    text = "".join((c.get("delta") or {}).get("content") or "" for ch in chunks for c in ch.get("choices", []))
    assert "".join(FAULT_TEXT).startswith(text), text


def test_upstream_429_every_attempt_is_rate_limit_error(client, mock):
    for _ in range(5):
        mock.reply_status(429, RATE_LIMITED_BODY)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 429
    assert_error_shape(info.value.response.json())
    assert len(mock.chat_requests()) >= 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_upstream_429_once_is_retried_by_gateway(client, mock, stream):
    mock.reply_status(429, RATE_LIMITED_BODY)
    text = mock.reply_text("Second ", "time ", "lucky 🍀")
    messages = [{"role": "user", "content": "hi"}]
    if stream:
        chunks = list(client.chat.completions.create(model=MODEL, messages=messages, stream=True))
        assert joined_content(chunks) == text
        assert choice_chunks(chunks)[-1].choices[0].finish_reason == "stop"
    else:
        r = client.chat.completions.create(model=MODEL, messages=messages)
        assert r.choices[0].message.content == text
        assert r.choices[0].finish_reason == "stop"
    assert len(mock.chat_requests()) == 2
