"""langchain-openai's ChatOpenAI against the gateway, with the mock Kiro upstream scripted per test."""

from __future__ import annotations

import json
from functools import reduce
from operator import add
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

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


@pytest.fixture
def llm(api_base: str, api_key: str) -> ChatOpenAI:
    return ChatOpenAI(base_url=api_base, api_key=api_key, model=MODEL, max_retries=0, timeout=30)


def current(body: dict[str, Any]) -> dict[str, Any]:
    return body["conversationState"]["currentMessage"]["userInputMessage"]


def history(body: dict[str, Any]) -> list[dict[str, Any]]:
    return body["conversationState"].get("history", [])


def assert_usage_metadata(usage: Any) -> None:
    assert usage is not None, "usage_metadata is missing"
    i, o, t = usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]
    assert all(type(x) is int for x in (i, o, t)), usage
    assert i >= 0 and o > 0 and t == i + o, usage


def test_invoke_returns_exact_text(llm, mock):
    text = mock.reply_text("Salut ", "à toi, ", "日本の友よ ", "🤖")
    msg = llm.invoke("hi")
    assert isinstance(msg, AIMessage)
    assert msg.content == text
    assert msg.response_metadata.get("finish_reason") == "stop"
    assert msg.response_metadata.get("model_name") == MODEL
    assert_usage_metadata(msg.usage_metadata)
    body = mock.last_chat()
    assert current(body)["modelId"] == KIRO_MODEL
    assert "hi" in current(body)["content"]


def test_stream_chunks_join_to_exact_text(llm, mock):
    text = mock.reply_text("Str", "eam", "ing ", "naïvely ", "— ", "日本 ", "🌊")
    chunks = list(llm.stream("stream please"))
    assert chunks and all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(c.content for c in chunks) == text
    final = reduce(add, chunks)
    assert final.content == text
    assert final.response_metadata.get("finish_reason") == "stop"


def test_stream_usage(api_base, api_key, mock):
    llm = ChatOpenAI(
        base_url=api_base, api_key=api_key, model=MODEL, max_retries=0, timeout=30, stream_usage=True
    )
    text = mock.reply_text("Counting ", "tokens.")
    final = reduce(add, llm.stream("count"))
    assert final.content == text
    assert_usage_metadata(final.usage_metadata)


def test_bind_tools_invoke(llm, mock):
    mock.reply([mock.tool_call("tooluse_1", "get_weather", '{"city":"Paris"}')])
    msg = llm.bind_tools([get_weather]).invoke("What's the weather in Paris?")
    assert len(msg.tool_calls) == 1, msg.tool_calls
    call = msg.tool_calls[0]
    assert call["name"] == "get_weather"
    assert call["args"] == {"city": "Paris"}
    assert call["id"] == "tooluse_1"
    assert msg.response_metadata.get("finish_reason") == "tool_calls"
    assert not msg.invalid_tool_calls
    ctx = current(mock.last_chat())["userInputMessageContext"]
    assert ctx["tools"][0]["toolSpecification"]["name"] == "get_weather"
    assert ctx["tools"][0]["toolSpecification"]["description"] == "Get the current weather for a city."


def test_bind_tools_stream_with_escaped_arguments(llm, mock):
    mock.reply(
        [
            mock.text("Un instant… "),
            mock.tool_call("tooluse_1", "get_weather", TRICKY_ARGS, fragment=3),
        ]
    )
    chunks = list(llm.bind_tools([get_weather]).stream("weather?"))
    final = reduce(add, chunks)
    assert final.content == "Un instant… "
    assert not final.invalid_tool_calls, final.invalid_tool_calls
    assert len(final.tool_calls) == 1, final.tool_calls
    call = final.tool_calls[0]
    assert call["name"] == "get_weather"
    assert call["id"] == "tooluse_1"
    assert call["args"] == TRICKY_ARGS_OBJ
    raw_args = "".join(tc.get("args") or "" for c in chunks for tc in c.tool_call_chunks)
    assert raw_args == TRICKY_ARGS
    assert final.response_metadata.get("finish_reason") == "tool_calls"


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
    assert msg.content == text
    body = mock.last_chat()
    hist = history(body)
    assert len(hist) == 2, hist
    assert "What's the weather in Paris?" in hist[0]["userInputMessage"]["content"]
    assert hist[1]["assistantResponseMessage"]["toolUses"] == [
        {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    ctx = current(body)["userInputMessageContext"]
    assert ctx["toolResults"] == [
        {"toolUseId": "tooluse_1", "content": [{"text": "18 C"}], "status": "success"}
    ]
    assert ctx["tools"][0]["toolSpecification"]["name"] == "get_weather"


def test_system_and_history(llm, mock):
    text = mock.reply_text("Fine.")
    msg = llm.invoke(
        [
            SystemMessage("You are terse."),
            HumanMessage("Hi"),
            AIMessage("Hello!"),
            HumanMessage("How are you?"),
        ]
    )
    assert msg.content == text
    body = mock.last_chat()
    hist = history(body)
    assert len(hist) == 2, hist
    assert hist[0]["userInputMessage"]["content"].startswith("You are terse.")
    assert "Hi" in hist[0]["userInputMessage"]["content"]
    assert hist[1]["assistantResponseMessage"]["content"] == "Hello!"
    assert current(body)["content"] == "How are you?"
