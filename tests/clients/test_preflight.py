"""What the gateway does before a request leaves and when the service cuts an answer short, seen
through the real client libraries:

1. a tool call whose arguments the service cut (not complete JSON) ends the answer as cut for
   length (OpenAI `length`, Anthropic `max_tokens`) and is never given invented arguments;
2. a conversation over KIRO_MAX_PAYLOAD_BYTES gets the "prompt is too long" error clients compact
   on, without a call upstream;
3. what Kiro would refuse with its opaque `400 Improperly formed request.` is refused before it
   leaves with a 400 that says why, or repaired so that the mock (which refuses malformed bodies
   as the service does) takes it;
4. with AUTO_TRIM_PAYLOAD=true (a second gateway) the oldest turns are dropped until the request
   fits, and `x-kiro-trimmed-messages` says how many.
"""

from __future__ import annotations

import json
import os
from functools import reduce
from operator import add
from typing import Any, Callable, Iterator

import anthropic
import openai
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.exceptions import ContextOverflowError
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI

MODEL = "claude-sonnet-4-5"
MAX_TOKENS = 256
PAYLOAD_LIMIT = 600_000  # the gateway's default KIRO_MAX_PAYLOAD_BYTES


@pytest.fixture(autouse=True)
def _no_anthropic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK and ChatAnthropic read ANTHROPIC_* variables: none of this machine's may leak in."""
    for name in list(os.environ):
        if name.startswith("ANTHROPIC_"):
            monkeypatch.delenv(name)


@pytest.fixture
def ac(gateway_url: str, api_key: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway_url, api_key=api_key, max_retries=0, timeout=30.0) as c:
        yield c


@pytest.fixture
def oc(api_base: str, api_key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=api_base, api_key=api_key, max_retries=0, timeout=30.0) as c:
        yield c


# --- request helpers -----------------------------------------------------------------------------


def conversation(body: dict[str, Any]) -> dict[str, Any]:
    return body["conversationState"]


def current(body: dict[str, Any]) -> dict[str, Any]:
    return conversation(body)["currentMessage"]["userInputMessage"]


def history(body: dict[str, Any]) -> list[dict[str, Any]]:
    return conversation(body).get("history", [])


def tool_names(body: dict[str, Any]) -> list[str]:
    ctx = current(body).get("userInputMessageContext", {})
    return [t["toolSpecification"]["name"] for t in ctx.get("tools", [])]


def body_size(body: dict[str, Any]) -> int:
    """Bytes of a recorded body as the gateway serialises it (compact JSON, UTF-8 unescaped)."""
    return len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())


def dump(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else x.model_dump()


# === 1. tool calls the service cut short ==========================================================

READ = {"name": "read_file", "description": "Read a file", "input_schema": {"type": "object"}}
WRITE = {"name": "write_file", "description": "Write a file", "input_schema": {"type": "object"}}
ANTHROPIC_FILE_TOOLS = [READ, WRITE]
OPENAI_FILE_TOOLS = [
    {"type": "function", "function": {"name": t["name"], "description": t["description"], "parameters": t["input_schema"]}}
    for t in ANTHROPIC_FILE_TOOLS
]
OK_ARGS = '{"path":"a.txt"}'
OK_INPUT = {"path": "a.txt"}


class Cut:
    """Arguments the service cut, and what the clients make of them when they stream.

    `sdk_stream_input`: the anthropic SDK's accumulated `input` of the cut block (it parses the
    partial JSON with jiter's partial mode, which drops an unfinished string); `lc_stream_args`:
    the `args` langchain-core gives the cut call in a merged stream (its parse_partial_json closes
    the unfinished string)."""

    def __init__(self, args: str, sdk_stream_input: dict[str, Any], lc_stream_args: dict[str, Any]):
        self.args = args
        self.sdk_stream_input = sdk_stream_input
        self.lc_stream_args = lc_stream_args


CUTS = {
    "mid-string": Cut(
        '{"path":"a.txt","text":"cut mid-str', {"path": "a.txt"}, {"path": "a.txt", "text": "cut mid-str"}
    ),
    # an escaped backslash, then the cut: the text ends in a backslash
    "after-escape": Cut('{"p":"C:\\\\', {}, {"p": "C:\\"}),
    # cut inside the escape itself
    "mid-escape": Cut('{"p":"C:\\', {}, {"p": "C:"}),
    # the first half of a surrogate pair, the second never came
    "lone-surrogate": Cut('{"t":"\\ud83d', {}, {"t": "\ud83d"}),
}
cuts = pytest.mark.parametrize("cut", list(CUTS.values()), ids=list(CUTS))


def reply_cut(mock: Any, cut: Cut) -> None:
    """Text, a complete call, then a call whose arguments stop short (in 5-byte fragments)."""
    mock.reply(
        [
            mock.text("Writing it."),
            mock.tool_call("tooluse_ok", "read_file", OK_ARGS, fragment=4),
            mock.tool_call("tooluse_cut", "write_file", cut.args, fragment=5),
        ]
    )


def openai_go(**kw: Any) -> dict[str, Any]:
    return dict(model=MODEL, tools=OPENAI_FILE_TOOLS, messages=[{"role": "user", "content": "go"}], **kw)


def anthropic_go(**kw: Any) -> dict[str, Any]:
    return dict(model=MODEL, max_tokens=MAX_TOKENS, tools=ANTHROPIC_FILE_TOOLS, messages=[{"role": "user", "content": "go"}], **kw)


@cuts
def test_openai_sdk_cut_tool_call_non_stream(oc, mock, cut):
    reply_cut(mock, cut)
    r = oc.chat.completions.create(**openai_go())
    choice = r.choices[0]
    assert choice.finish_reason == "length"
    calls = [(t.id, t.function.name, t.function.arguments) for t in choice.message.tool_calls or []]
    # the complete call stays a normal call; the cut one keeps the arguments exactly as received
    assert calls == [("tooluse_ok", "read_file", OK_ARGS), ("tooluse_cut", "write_file", cut.args)]
    assert choice.message.content == "Writing it."


@cuts
def test_openai_sdk_cut_tool_call_stream(oc, mock, cut):
    reply_cut(mock, cut)
    chunks = list(oc.chat.completions.create(**openai_go(stream=True)))
    assert [c.finish_reason for ch in chunks for c in ch.choices if c.finish_reason] == ["length"]
    calls: dict[int, dict[str, str]] = {}
    for ch in chunks:
        for c in ch.choices:
            for t in c.delta.tool_calls or []:
                call = calls.setdefault(t.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += t.id or ""
                call["name"] += (t.function and t.function.name) or ""
                call["arguments"] += (t.function and t.function.arguments) or ""
    assert calls == {
        0: {"id": "tooluse_ok", "name": "read_file", "arguments": OK_ARGS},
        1: {"id": "tooluse_cut", "name": "write_file", "arguments": cut.args},  # nothing added
    }


@cuts
def test_anthropic_sdk_cut_tool_call_stream(ac, mock, cut):
    reply_cut(mock, cut)
    with ac.messages.stream(**anthropic_go()) as s:
        events = [dump(e) for e in s]
        final = s.get_final_message()  # must not raise on the cut JSON
    assert final.stop_reason == "max_tokens"
    blocks = [dump(b) for b in final.content]
    assert [b["type"] for b in blocks] == ["text", "tool_use", "tool_use"], blocks
    assert (blocks[1]["id"], blocks[1]["name"], blocks[1]["input"]) == ("tooluse_ok", "read_file", OK_INPUT)
    # The SDK keeps the cut block, with the input its partial parse makes of what arrived.
    assert (blocks[2]["id"], blocks[2]["name"]) == ("tooluse_cut", "write_file")
    assert blocks[2]["input"] == cut.sdk_stream_input, blocks[2]

    start = next(e for e in events if e["type"] == "content_block_start" and e["content_block"].get("id") == "tooluse_cut")
    index = start["index"]
    sent = "".join(
        e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta" and e["index"] == index
    )
    assert sent == cut.args, "exactly what the service sent, nothing added"
    assert any(e["type"] == "content_block_stop" and e["index"] == index for e in events), "the cut block is closed"
    assert [e["delta"]["stop_reason"] for e in events if e["type"] == "message_delta"] == ["max_tokens"]


@cuts
def test_anthropic_sdk_cut_tool_call_non_stream(ac, mock, cut):
    reply_cut(mock, cut)
    r = ac.messages.create(**anthropic_go())
    assert r.stop_reason == "max_tokens"
    blocks = [dump(b) for b in r.content]
    # the cut call is left out rather than given an input it never had
    assert [(b["type"], b.get("id")) for b in blocks] == [("text", None), ("tool_use", "tooluse_ok")], blocks
    assert blocks[0]["text"] == "Writing it."
    assert blocks[1]["input"] == OK_INPUT


def ok_tool_call() -> dict[str, Any]:
    return {"name": "read_file", "args": OK_INPUT, "id": "tooluse_ok", "type": "tool_call"}


def openai_llm(api_base: str, api_key: str) -> Any:
    return ChatOpenAI(base_url=api_base, api_key=api_key, model=MODEL, max_retries=0, timeout=30).bind_tools(
        OPENAI_FILE_TOOLS
    )


def anthropic_llm(gateway_url: str, api_key: str) -> Any:
    return ChatAnthropic(
        base_url=gateway_url, api_key=api_key, model=MODEL, max_tokens=MAX_TOKENS, max_retries=0, timeout=30
    ).bind_tools(ANTHROPIC_FILE_TOOLS)


def no_invented_empty_args(msg: AIMessage) -> None:
    assert not [c for c in msg.tool_calls if c["args"] == {}], msg.tool_calls


@cuts
def test_langchain_openai_cut_tool_call_invoke(api_base, api_key, mock, cut):
    reply_cut(mock, cut)
    msg = openai_llm(api_base, api_key).invoke("go")
    assert msg.response_metadata["finish_reason"] == "length"
    assert msg.tool_calls == [ok_tool_call()]
    invalid = [{k: c[k] for k in ("id", "name", "args")} for c in msg.invalid_tool_calls]
    assert invalid == [{"id": "tooluse_cut", "name": "write_file", "args": cut.args}], msg.invalid_tool_calls
    no_invented_empty_args(msg)


@cuts
def test_langchain_openai_cut_tool_call_stream(api_base, api_key, mock, cut):
    reply_cut(mock, cut)
    msg = reduce(add, list(openai_llm(api_base, api_key).stream("go")))
    assert msg.response_metadata["finish_reason"] == "length"
    chunks = [(c["id"], c["name"], c["args"]) for c in msg.tool_call_chunks]
    assert chunks == [("tooluse_ok", "read_file", OK_ARGS), ("tooluse_cut", "write_file", cut.args)]
    # langchain-core's merged stream closes the cut JSON itself and makes it a valid tool call
    # (the gateway sent only what it received; finish_reason is the only sign of the cut)
    assert msg.tool_calls == [
        ok_tool_call(),
        {"name": "write_file", "args": cut.lc_stream_args, "id": "tooluse_cut", "type": "tool_call"},
    ]
    assert msg.invalid_tool_calls == []
    no_invented_empty_args(msg)


@cuts
def test_langchain_anthropic_cut_tool_call_invoke(gateway_url, api_key, mock, cut):
    reply_cut(mock, cut)
    msg = anthropic_llm(gateway_url, api_key).invoke("go")
    assert msg.response_metadata["stop_reason"] == "max_tokens"
    # the gateway left the cut call out of the answer: LangChain has nothing to report as invalid
    assert msg.tool_calls == [ok_tool_call()]
    assert msg.invalid_tool_calls == []
    assert "tooluse_cut" not in json.dumps(msg.content)
    no_invented_empty_args(msg)


@cuts
def test_langchain_anthropic_cut_tool_call_stream(gateway_url, api_key, mock, cut):
    reply_cut(mock, cut)
    msg = reduce(add, list(anthropic_llm(gateway_url, api_key).stream("go")))
    assert msg.response_metadata["stop_reason"] == "max_tokens"
    chunks = [(c["id"], c["name"], c["args"]) for c in msg.tool_call_chunks]
    assert chunks == [("tooluse_ok", "read_file", OK_ARGS), ("tooluse_cut", "write_file", cut.args)]
    # as with langchain-openai: the merged stream completes the cut JSON on its own
    assert msg.tool_calls == [
        ok_tool_call(),
        {"name": "write_file", "args": cut.lc_stream_args, "id": "tooluse_cut", "type": "tool_call"},
    ]
    assert msg.invalid_tool_calls == []
    no_invented_empty_args(msg)


# === 2. context too long ==========================================================================

LAST_QUESTION = "the last question"


def big_conversation(turns: int = 20, prefix: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """About 40 KB a turn (20 turns: about 800 KB as a Kiro request), then a short question."""
    m = list(prefix or [])
    for i in range(turns):
        m.append({"role": "user", "content": f"question {i}: " + "q" * 20_000})
        m.append({"role": "assistant", "content": f"answer {i}: " + "a" * 20_000})
    m.append({"role": "user", "content": LAST_QUESTION})
    return m


def assert_too_long_message(message: str) -> None:
    assert message.startswith("prompt is too long"), message


def assert_no_generate_call(mock: Any) -> None:
    assert mock.chat_requests() == [], "nothing may go upstream"


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_openai_sdk_context_too_long(oc, mock, stream):
    mock.reply_text("never sent")
    with pytest.raises(openai.BadRequestError) as e:
        r = oc.chat.completions.create(model=MODEL, messages=big_conversation(), stream=stream)
        if stream:
            list(r)
    err = e.value
    assert err.status_code == 400
    assert err.code == "context_length_exceeded"
    assert err.type == "invalid_request_error"
    assert_too_long_message(err.body["message"])
    assert_no_generate_call(mock)


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_anthropic_sdk_context_too_long(ac, mock, stream):
    mock.reply_text("never sent")
    with pytest.raises(anthropic.BadRequestError) as e:
        if stream:
            with ac.messages.stream(model=MODEL, max_tokens=MAX_TOKENS, messages=big_conversation()) as s:
                s.get_final_message()
        else:
            ac.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=big_conversation())
    err = e.value
    assert err.status_code == 400
    assert err.body["type"] == "error"
    assert err.body["error"]["type"] == "invalid_request_error"
    assert_too_long_message(err.body["error"]["message"])
    assert_no_generate_call(mock)


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_langchain_openai_context_too_long(api_base, api_key, mock, stream):
    llm = ChatOpenAI(base_url=api_base, api_key=api_key, model=MODEL, max_retries=0, timeout=30)
    with pytest.raises(openai.BadRequestError) as e:
        list(llm.stream(big_conversation())) if stream else llm.invoke(big_conversation())
    # LangChain recognises it as a context overflow (and it still is the SDK's error)
    assert isinstance(e.value, ContextOverflowError), type(e.value).__mro__
    assert e.value.code == "context_length_exceeded"
    assert_too_long_message(e.value.body["message"])
    assert_no_generate_call(mock)


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_langchain_anthropic_context_too_long(gateway_url, api_key, mock, stream):
    llm = ChatAnthropic(base_url=gateway_url, api_key=api_key, model=MODEL, max_tokens=MAX_TOKENS, max_retries=0, timeout=30)
    with pytest.raises(anthropic.BadRequestError) as e:
        list(llm.stream(big_conversation())) if stream else llm.invoke(big_conversation())
    assert isinstance(e.value, ContextOverflowError), type(e.value).__mro__
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert_too_long_message(e.value.body["error"]["message"])
    assert_no_generate_call(mock)


# === 3. pre-flight: refused with the reason, or repaired ==========================================

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
OPENAI_WEATHER = {
    "type": "function",
    "function": {"name": WEATHER["name"], "description": WEATHER["description"], "parameters": WEATHER["input_schema"]},
}
PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
BROKEN_BASE64 = "not base64!!"


def test_openai_sdk_invalid_tool_name_is_refused(oc, mock):
    mock.reply_text("never sent")
    bad = {"type": "function", "function": {"name": "bad name!", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as e:
        oc.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], tools=[bad])
    assert e.value.status_code == 400
    assert '"bad name!"' in e.value.body["message"], e.value.body
    assert e.value.param == "tools[0].name"
    assert_no_generate_call(mock)


def test_anthropic_sdk_invalid_tool_name_is_refused(ac, mock):
    mock.reply_text("never sent")
    bad = {"name": "bad name!", "input_schema": {"type": "object"}}
    with pytest.raises(anthropic.BadRequestError) as e:
        ac.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "hi"}], tools=[bad])
    assert e.value.status_code == 400
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert '"bad name!"' in e.value.body["error"]["message"], e.value.body
    assert_no_generate_call(mock)


def test_openai_sdk_broken_base64_image_is_refused(oc, mock):
    mock.reply_text("never sent")
    content = [
        {"type": "text", "text": "what is it?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{BROKEN_BASE64}"}},
    ]
    with pytest.raises(openai.BadRequestError) as e:
        oc.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}])
    assert e.value.status_code == 400
    assert e.value.body["message"] == "messages[0].content[1]: image data is not valid base64", e.value.body
    assert e.value.param == "messages[0].content[1].image_url.url"
    assert_no_generate_call(mock)


def test_anthropic_sdk_broken_base64_image_is_refused(ac, mock):
    mock.reply_text("never sent")
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": BROKEN_BASE64}},
        {"type": "text", "text": "what is it?"},
    ]
    with pytest.raises(anthropic.BadRequestError) as e:
        ac.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": content}])
    assert e.value.status_code == 400
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert e.value.body["error"]["message"] == "messages[0].content[0]: image data is not valid base64", e.value.body
    assert_no_generate_call(mock)


def test_valid_base64_image_goes_through(ac, oc, mock):
    # the counterpart of the refusals above: the same requests with a real image are sent
    mock.reply_text("a pixel")
    mock.reply_text("a pixel")
    ac.messages.create(
        model=MODEL,
        max_tokens=MAX_TOKENS,
        messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX}},
            {"type": "text", "text": "what is it?"},
        ]}],
    )
    oc.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is it?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_1PX}"}},
        ]}],
    )
    bodies = mock.chat_requests()
    assert [current(b)["images"][0]["source"]["bytes"] for b in bodies] == [PNG_1PX, PNG_1PX]


# Conversations Kiro would refuse as sent, in each dialect, with one detail of the repair the
# recorded upstream body must show. The mock refuses a malformed body (400 `Improperly formed
# request.`, which the SDKs would raise), so a 200 means what went out was well formed.


def a_call(id: str, name: str = "get_weather", input: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": id, "name": name, "input": {"city": "Paris"} if input is None else input}


def a_result(id: str, text: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": id, "content": text}


def o_calls(*calls: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in calls],
    }


def o_result(id: str, text: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": id, "content": text}


def u(text: Any) -> dict[str, Any]:
    return {"role": "user", "content": text}


def asst(text: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def check_two_users(body: dict[str, Any]) -> None:
    h = history(body)
    assert [list(m) for m in h] == [["userInputMessage"], ["assistantResponseMessage"]], h
    assert h[0]["userInputMessage"]["content"] == "one\ntwo"  # merged into one turn


def check_assistant_first(body: dict[str, Any]) -> None:
    h = history(body)
    assert h[0]["userInputMessage"]["content"] == "(empty)", h  # a user turn put before it
    assert h[1]["assistantResponseMessage"]["content"] == "earlier"


def check_empty_assistant(body: dict[str, Any]) -> None:
    h = history(body)
    assert h[1]["assistantResponseMessage"]["content"] == "(empty)", h


def check_unanswered(body: dict[str, Any]) -> None:
    a = history(body)[1]["assistantResponseMessage"]
    assert [t["toolUseId"] for t in a["toolUses"]] == ["t1"], a
    assert '[Tool: get_weather (t2)]\n{"city":"Oslo"}' in a["content"], a  # the unanswered call, as text


def check_orphan(body: dict[str, Any]) -> None:
    cur = current(body)
    assert [r["toolUseId"] for r in cur["userInputMessageContext"]["toolResults"]] == ["t1"], cur
    assert "[Tool Result (t9)]\nstray" in cur["content"], cur  # the orphan, as text


def check_undefined_tool(body: dict[str, Any]) -> None:
    assert tool_names(body) == ["get_weather", "old_tool"], body
    spec = current(body)["userInputMessageContext"]["tools"][1]["toolSpecification"]
    assert spec["description"] == "Tool: old_tool (used earlier in this conversation)"
    assert spec["inputSchema"]["json"]["type"] == "object"
    assert history(body)[1]["assistantResponseMessage"]["toolUses"][0]["name"] == "old_tool"


REPAIRS: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]], Callable[[dict[str, Any]], None]]] = {
    "two-user-turns": (
        [u("one"), u("two"), asst("x"), u("three")],
        [u("one"), u("two"), asst("x"), u("three")],
        check_two_users,
    ),
    "assistant-first": ([asst("earlier"), u("now")], [asst("earlier"), u("now")], check_assistant_first),
    "empty-assistant": (
        [u("hi"), asst(""), u("again")],
        [u("hi"), asst(""), u("again")],
        check_empty_assistant,
    ),
    "unanswered-tool-call": (
        [u("weather?"), asst([a_call("t1"), a_call("t2", input={"city": "Oslo"})]), u([a_result("t1", "sunny")])],
        [
            u("weather?"),
            o_calls(("t1", "get_weather", '{"city":"Paris"}'), ("t2", "get_weather", '{"city":"Oslo"}')),
            o_result("t1", "sunny"),
        ],
        check_unanswered,
    ),
    "orphaned-tool-result": (
        [u("weather?"), asst([a_call("t1")]), u([a_result("t1", "sunny"), a_result("t9", "stray")])],
        [u("weather?"), o_calls(("t1", "get_weather", '{"city":"Paris"}')), o_result("t1", "sunny"), o_result("t9", "stray")],
        check_orphan,
    ),
    "tool-only-in-history": (
        [u("clean up"), asst([a_call("t1", "old_tool", {})]), u([a_result("t1", "done")])],
        [u("clean up"), o_calls(("t1", "old_tool", "{}")), o_result("t1", "done")],
        check_undefined_tool,
    ),
}


@pytest.mark.parametrize("sdk", ["anthropic", "openai"])
@pytest.mark.parametrize("case", list(REPAIRS))
def test_repaired_conversation_reaches_kiro_well_formed(ac, oc, mock, case, sdk):
    anthropic_messages, openai_messages, check = REPAIRS[case]
    mock.reply_text("Repaired.")
    if sdk == "anthropic":
        resp = ac.messages.with_raw_response.create(
            model=MODEL, max_tokens=MAX_TOKENS, messages=anthropic_messages, tools=[WEATHER]
        )
        assert resp.status_code == 200
        assert [b.text for b in resp.parse().content] == ["Repaired."]
    else:
        resp = oc.chat.completions.with_raw_response.create(model=MODEL, messages=openai_messages, tools=[OPENAI_WEATHER])
        assert resp.status_code == 200
        assert resp.parse().choices[0].message.content == "Repaired."
    bodies = mock.chat_requests()
    assert len(bodies) == 1, "one call, taken at once"
    check(bodies[0])


# === 4. AUTO_TRIM_PAYLOAD =========================================================================


@pytest.fixture(scope="module")
def trim_stack(extra_stack) -> Iterator[tuple[Any, str]]:
    """A mock and a gateway with AUTO_TRIM_PAYLOAD=true (otherwise the suite's settings)."""
    with extra_stack("trim", {"AUTO_TRIM_PAYLOAD": "true"}) as stack:
        yield stack


@pytest.fixture
def trim_mock(trim_stack) -> Any:
    mock, _ = trim_stack
    mock.reset()
    return mock


@pytest.fixture
def trim_ac(trim_stack, api_key) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=trim_stack[1], api_key=api_key, max_retries=0, timeout=30.0) as c:
        yield c


@pytest.fixture
def trim_oc(trim_stack, api_key) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=trim_stack[1] + "/v1", api_key=api_key, max_retries=0, timeout=30.0) as c:
        yield c


TRIM_HEADER = "x-kiro-trimmed-messages"


def check_trimmed(body: dict[str, Any], dropped: int, sent: list[dict[str, Any]]) -> None:
    """The recorded body fits, keeps the last user message, and lost exactly the oldest `dropped`
    client messages."""
    assert body_size(body) < PAYLOAD_LIMIT, body_size(body)
    assert current(body)["content"] == LAST_QUESTION
    # what is left is the newest messages, whole, in order (the last one is the current message)
    kept = sent[dropped:-1]
    assert len(history(body)) == len(kept), (dropped, len(history(body)))
    for h, m in zip(history(body), kept):
        entry = h.get("userInputMessage") or h["assistantResponseMessage"]
        assert entry["content"] == m["content"]


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_auto_trim_openai_sdk(trim_oc, trim_mock, stream):
    trim_mock.reply_text("Fits now.")
    messages = big_conversation()
    resp = trim_oc.chat.completions.with_raw_response.create(model=MODEL, messages=messages, stream=stream)
    assert resp.status_code == 200
    dropped = int(resp.headers[TRIM_HEADER])
    assert dropped > 0 and dropped % 2 == 0, dropped  # whole turns: a question and its answer
    if stream:
        text = "".join(c.delta.content or "" for ch in resp.parse() for c in ch.choices)
    else:
        text = resp.parse().choices[0].message.content
    assert text == "Fits now."
    check_trimmed(trim_mock.last_chat(), dropped, messages)


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_auto_trim_anthropic_sdk(trim_ac, trim_mock, stream):
    trim_mock.reply_text("Fits now.")
    messages = big_conversation()
    resp = trim_ac.messages.with_raw_response.create(model=MODEL, max_tokens=MAX_TOKENS, messages=messages, stream=stream)
    assert resp.status_code == 200
    dropped = int(resp.headers[TRIM_HEADER])
    assert dropped > 0 and dropped % 2 == 0, dropped
    if stream:
        text = "".join(e.delta.text for e in resp.parse() if e.type == "content_block_delta")
    else:
        text = "".join(b.text for b in resp.parse().content)
    assert text == "Fits now."
    check_trimmed(trim_mock.last_chat(), dropped, messages)


def test_auto_trim_drops_a_tool_call_with_its_result(trim_ac, trim_mock):
    # the oldest turn holds a tool call and its (large) result: they go together, or not at all
    prefix = [
        u("first " + "f" * 20_000),
        asst([a_call("t1", input={"city": "Oslo"})]),
        u([a_result("t1", "x" * 20_000)]),
        asst("it is cold"),
    ]
    messages = big_conversation(15, prefix)
    trim_mock.reply_text("ok")
    resp = trim_ac.messages.with_raw_response.create(
        model=MODEL, max_tokens=MAX_TOKENS, messages=messages, tools=[WEATHER]
    )
    assert resp.status_code == 200
    dropped = int(resp.headers[TRIM_HEADER])
    assert dropped >= len(prefix), dropped
    body = trim_mock.last_chat()
    text = json.dumps(body)
    assert "first ff" not in text and '"t1"' not in text, "the call went with its result"
    assert body_size(body) < PAYLOAD_LIMIT
    assert current(body)["content"] == LAST_QUESTION


def test_auto_trim_leaves_a_request_that_fits_alone(trim_oc, trim_mock):
    trim_mock.reply_text("ok")
    messages = big_conversation(5)  # about 200 KB
    resp = trim_oc.chat.completions.with_raw_response.create(model=MODEL, messages=messages)
    assert resp.status_code == 200
    assert TRIM_HEADER not in resp.headers
    check_trimmed(trim_mock.last_chat(), 0, messages)


def test_auto_trim_never_drops_the_last_message(trim_oc, trim_mock):
    # nothing older to drop: still too long, and said so as without trimming
    trim_mock.reply_text("never sent")
    with pytest.raises(openai.BadRequestError) as e:
        trim_oc.chat.completions.create(model=MODEL, messages=[u("x" * 700_000)])
    assert e.value.code == "context_length_exceeded"
    assert_too_long_message(e.value.body["message"])
    assert_no_generate_call(trim_mock)


# ---------------------------------------------------------------------------------------------
# a used-up monthly quota: a 429 the SDKs do not retry (x-should-retry: false)
# ---------------------------------------------------------------------------------------------

QUOTA_BODY = '{"message":"You have reached the limit.","reason":"MONTHLY_REQUEST_COUNT"}'


def test_openai_sdk_quota_is_insufficient_quota_and_not_retried(api_base, api_key, mock):
    for _ in range(5):
        mock.reply_status(402, QUOTA_BODY)
    client = openai.OpenAI(base_url=api_base, api_key=api_key, max_retries=2)
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    client.close()
    assert e.value.status_code == 429
    assert e.value.code == "insufficient_quota"
    assert e.value.body["type"] == "insufficient_quota"
    assert e.value.response.headers.get("x-should-retry") == "false"
    assert len(mock.chat_requests()) == 1, "neither the gateway nor the SDK retried"


def test_anthropic_sdk_quota_is_rate_limit_error_and_not_retried(gateway_url, api_key, mock):
    for _ in range(5):
        mock.reply_status(402, QUOTA_BODY)
    client = anthropic.Anthropic(base_url=gateway_url, api_key=api_key, max_retries=2)
    with pytest.raises(anthropic.RateLimitError) as e:
        client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    client.close()
    assert e.value.status_code == 429
    assert e.value.body["error"]["type"] == "rate_limit_error"
    assert "Monthly request limit" in e.value.body["error"]["message"]
    assert len(mock.chat_requests()) == 1, "neither the gateway nor the SDK retried"
