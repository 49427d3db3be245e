"""langchain-anthropic's ChatAnthropic against the gateway's Anthropic API, with the mock Kiro
upstream scripted per test. Its base URL is the gateway root (the SDK appends /v1/messages)."""

from __future__ import annotations

import asyncio
import json
import os
from functools import reduce
from operator import add
from typing import Any

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool

MODEL = "claude-sonnet-4-5"
KIRO_MODEL = "claude-sonnet-4.5"

# Sorted keys, compact, raw non-ASCII: stable under pass-through and compact re-serialisation.
TRICKY_ARGS_OBJ = {
    "city": "Paris",
    "note": 'He said "bonjour" \\o/ 🎉\nnext line, 日本',
    "units": "°C",
}
TRICKY_ARGS = json.dumps(TRICKY_ARGS_OBJ, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


@tool
def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    return "18 C"


@pytest.fixture(autouse=True)
def _no_anthropic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """ChatAnthropic and the SDK read ANTHROPIC_* variables: none of this machine's may leak in."""
    for name in list(os.environ):
        if name.startswith("ANTHROPIC_"):
            monkeypatch.delenv(name)


def make_llm(gateway_url: str, api_key: str, **kwargs: Any) -> ChatAnthropic:
    return ChatAnthropic(
        base_url=gateway_url,
        api_key=api_key,
        model=MODEL,
        max_tokens=1024,
        max_retries=0,
        timeout=30,
        **kwargs,
    )


@pytest.fixture
def llm(gateway_url: str, api_key: str) -> ChatAnthropic:
    return make_llm(gateway_url, api_key)


def current(body: dict[str, Any]) -> dict[str, Any]:
    return body["conversationState"]["currentMessage"]["userInputMessage"]


def history(body: dict[str, Any]) -> list[dict[str, Any]]:
    return body["conversationState"].get("history", [])


def text_of(content: Any) -> str:
    """The text of a message's content, a string or a list of blocks."""
    if isinstance(content, str):
        return content
    return "".join(b if isinstance(b, str) else b.get("text", "") if b.get("type") == "text" else "" for b in content)


def assert_usage_metadata(usage: Any) -> None:
    assert usage is not None, "usage_metadata is missing"
    i, o, t = usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]
    assert all(type(x) is int for x in (i, o, t)), usage
    assert i > 0 and o > 0 and t == i + o, usage


def test_invoke_returns_exact_text(llm, mock):
    text = mock.reply_text("Salut ", "à toi, ", "日本の友よ ", "🤖")
    msg = llm.invoke("hi")
    assert isinstance(msg, AIMessage)
    assert msg.content == text
    assert msg.response_metadata.get("stop_reason") == "end_turn"
    assert msg.response_metadata.get("model_name") == MODEL
    assert str(msg.response_metadata.get("id", "")).startswith("msg_"), msg.response_metadata
    assert not msg.tool_calls
    assert_usage_metadata(msg.usage_metadata)
    body = mock.last_chat()
    assert current(body)["modelId"] == KIRO_MODEL
    assert "hi" in current(body)["content"]


def test_stream_chunks_join_to_exact_text(llm, mock):
    text = mock.reply_text("Str", "eam", "ing ", "naïvely ", "— ", "日本 ", "🌊")
    chunks = list(llm.stream("stream please"))
    assert chunks and all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(text_of(c.content) for c in chunks) == text
    final = reduce(add, chunks)
    assert text_of(final.content) == text
    assert final.response_metadata.get("stop_reason") == "end_turn"
    # ChatAnthropic takes streamed usage from message_delta only (it ignores message_start's), so
    # input_tokens are only right when message_delta.usage carries them, as the Anthropic API does.
    assert_usage_metadata(final.usage_metadata)
    assert current(mock.last_chat())["modelId"] == KIRO_MODEL


def test_async_invoke_and_stream(gateway_url, api_key, mock):
    llm = make_llm(gateway_url, api_key)
    text = "Asynchrone, ça marche ✨ 日本"

    async def run() -> tuple[Any, list[Any]]:
        mock.reply_text("Asynchrone, ", "ça marche ", "✨ 日本")
        msg = await llm.ainvoke("async?")
        mock.reply_text("Asynchrone, ", "ça marche ", "✨ 日本")
        chunks = [c async for c in llm.astream("async stream?")]
        return msg, chunks

    msg, chunks = asyncio.run(run())
    assert msg.content == text
    assert "".join(text_of(c.content) for c in chunks) == text


def test_bind_tools_invoke(llm, mock):
    mock.reply([mock.tool_call("tooluse_1", "get_weather", '{"city":"Paris"}')])
    msg = llm.bind_tools([get_weather]).invoke("What's the weather in Paris?")
    assert len(msg.tool_calls) == 1, msg.tool_calls
    call = msg.tool_calls[0]
    assert call["name"] == "get_weather"
    assert call["args"] == {"city": "Paris"}
    assert call["id"] == "tooluse_1"
    assert msg.response_metadata.get("stop_reason") == "tool_use"
    assert not msg.invalid_tool_calls
    ctx = current(mock.last_chat())["userInputMessageContext"]
    spec = ctx["tools"][0]["toolSpecification"]
    assert spec["name"] == "get_weather"
    assert spec["description"] == "Get the current weather for a city."
    assert spec["inputSchema"]["json"]["properties"]["city"]["type"] == "string"


def test_bind_tools_invoke_text_and_tricky_arguments(llm, mock):
    mock.reply(
        [
            mock.text("Un instant… "),
            mock.text("日本 🎌"),
            mock.tool_call("tooluse_7", "get_weather", TRICKY_ARGS, fragment=3),
        ]
    )
    msg = llm.bind_tools([get_weather]).invoke("weather?")
    assert text_of(msg.content) == "Un instant… 日本 🎌"
    assert [(c["id"], c["name"], c["args"]) for c in msg.tool_calls] == [("tooluse_7", "get_weather", TRICKY_ARGS_OBJ)]
    assert not msg.invalid_tool_calls


def test_bind_tools_stream_with_escaped_arguments(llm, mock):
    mock.reply(
        [
            mock.text("Un instant… "),
            mock.tool_call("tooluse_1", "get_weather", TRICKY_ARGS, fragment=3),
        ]
    )
    chunks = list(llm.bind_tools([get_weather]).stream("weather?"))
    final = reduce(add, chunks)
    assert text_of(final.content) == "Un instant… "
    assert not final.invalid_tool_calls, final.invalid_tool_calls
    assert len(final.tool_calls) == 1, final.tool_calls
    call = final.tool_calls[0]
    assert call["name"] == "get_weather"
    assert call["id"] == "tooluse_1"
    assert call["args"] == TRICKY_ARGS_OBJ
    raw_args = "".join(tc.get("args") or "" for c in chunks for tc in c.tool_call_chunks)
    assert json.loads(raw_args) == TRICKY_ARGS_OBJ
    assert final.response_metadata.get("stop_reason") == "tool_use"


def test_tool_message_round_trip(llm, mock):
    text = mock.reply_text("18 °C ", "in Paris.")
    msg = llm.bind_tools([get_weather]).invoke(
        [
            HumanMessage("What's the weather in Paris?"),
            AIMessage(
                content="",
                tool_calls=[{"id": "tooluse_1", "name": "get_weather", "args": {"city": "Paris"}}],
            ),
            ToolMessage("18 C", tool_call_id="tooluse_1"),
        ]
    )
    assert text_of(msg.content) == text
    body = mock.last_chat()
    hist = history(body)
    assert len(hist) == 2, hist
    assert "What's the weather in Paris?" in hist[0]["userInputMessage"]["content"]
    assert hist[1]["assistantResponseMessage"]["toolUses"] == [
        {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    ctx = current(body)["userInputMessageContext"]
    assert ctx["toolResults"] == [{"toolUseId": "tooluse_1", "content": [{"text": "18 C"}], "status": "success"}]
    assert ctx["tools"][0]["toolSpecification"]["name"] == "get_weather"


def test_error_tool_message_round_trip(llm, mock):
    text = mock.reply_text("Désolé.")
    msg = llm.bind_tools([get_weather]).invoke(
        [
            HumanMessage("Weather in Atlantis?"),
            AIMessage(
                content="",
                tool_calls=[{"id": "tooluse_1", "name": "get_weather", "args": {"city": "Atlantis"}}],
            ),
            ToolMessage("unknown city", tool_call_id="tooluse_1", status="error"),
        ]
    )
    assert text_of(msg.content) == text
    ctx = current(mock.last_chat())["userInputMessageContext"]
    assert ctx["toolResults"] == [
        {"toolUseId": "tooluse_1", "content": [{"text": "unknown city"}], "status": "error"}
    ]


def test_system_and_history(llm, mock):
    text = mock.reply_text("Fine.")
    msg = llm.invoke(
        [
            SystemMessage("You are terse. Sois bref."),
            HumanMessage("Hi"),
            AIMessage("Hello!"),
            HumanMessage("How are you?"),
        ]
    )
    assert msg.content == text
    body = mock.last_chat()
    hist = history(body)
    assert len(hist) == 2, hist
    assert hist[0]["userInputMessage"]["content"].startswith("You are terse. Sois bref.")
    assert "Hi" in hist[0]["userInputMessage"]["content"]
    assert hist[1]["assistantResponseMessage"]["content"] == "Hello!"
    assert current(body)["content"] == "How are you?"
    assert current(body)["modelId"] == KIRO_MODEL


def test_get_num_tokens_from_messages(llm, mock):
    """ChatAnthropic counts tokens through /v1/messages/count_tokens."""
    short = llm.get_num_tokens_from_messages([HumanMessage("hi")])
    long = llm.get_num_tokens_from_messages(
        [SystemMessage("You are a meticulous assistant. " * 50), HumanMessage("hi")]
    )
    assert type(short) is int and short > 0, short
    assert long > short, (short, long)
    assert mock.chat_requests() == []
