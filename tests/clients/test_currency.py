"""Newer Kiro runtime behaviour, seen through the real client libraries: native reasoning
(`additionalModelRequestFields` out, `reasoningContentEvent` in, signed thinking sent back),
the service's own token usage (`metadataEvent.tokenUsage`, cache figures, `usage.kiro`) and its
stop reasons.

The mock advertises a native reasoning schema for claude-opus-4.5 only (conftest's
NATIVE_REASONING_MODELS); every other model keeps prompt-tag reasoning.
"""

from __future__ import annotations

import json
import os
from functools import reduce
from operator import add
from typing import Any, Iterator

import anthropic
import openai
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_openai import ChatOpenAI

NATIVE = "claude-opus-4-5"  # what clients send
NATIVE_KIRO = "claude-opus-4.5"  # what the upstream receives; the mock advertises a schema for it
PROMPT = "claude-sonnet-4-5"  # a model without a schema: prompt-tag reasoning
PROMPT_KIRO = "claude-sonnet-4.5"
MAX_TOKENS = 1024
ANTHROPIC_VERSION = "2023-06-01"

SIGNATURE = "sig-abc"
REDACTED = "b3BhcXVl"
THINKING_PIECES = ("Let me see: ", "2 + 2 — é日 ", "is 4.")
THINKING_TEXT = "".join(THINKING_PIECES)
ANSWER = "The answer is 4."

# anthropic 2.x warns on every call to this (real, deprecated) model id.
pytestmark = pytest.mark.filterwarnings("ignore:The model 'claude-opus-4-5' is deprecated:DeprecationWarning")

IMPROPERLY_FORMED = '{"message":"Improperly formed request.","reason":null}'

# A metadataEvent as newer runtimes send it, and the figures clients must see from it.
TOKEN_USAGE = {
    "uncachedInputTokens": 120,
    "cacheReadInputTokens": 3000,
    "cacheWriteInputTokens": 100,
    "outputTokens": 42,
    "totalTokens": 3262,
}
CREDITS = 0.37
# The default scripted end: meteringEvent 0.0148 credits, contextUsageEvent 1.25 % (of the
# mock's 200000-token input window).
DEFAULT_CREDITS = 0.0148
DEFAULT_CONTEXT_PROMPT_TOKENS = 2500


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


# --- scripted upstream events --------------------------------------------------------------------


def raw_event(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": "raw", "event_type": event_type, "payload": json.dumps(payload, ensure_ascii=False)}


def reasoning_events() -> list[dict[str, Any]]:
    """Reasoning deltas, the signature in an event of its own, then a redacted block."""
    evs = [raw_event("reasoningContentEvent", {"text": p}) for p in THINKING_PIECES]
    evs.append(raw_event("reasoningContentEvent", {"text": "", "signature": SIGNATURE}))
    evs.append(raw_event("reasoningContentEvent", {"redactedContent": REDACTED}))
    return evs


def reply_reasoning(mock: Any) -> None:
    mock.reply([*reasoning_events(), mock.text("The answer "), mock.text("is 4.")])


def metadata_event(stop_reason: str = "END_TURN", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return raw_event("metadataEvent", {"tokenUsage": usage or TOKEN_USAGE, "stopReason": stop_reason})


def reply_with_service_usage(mock: Any, text: str = "Cached answer.", stop_reason: str = "END_TURN") -> None:
    """Text, then the service's usage, its metering and a context figure (which must lose to the
    service's figures): no default end, so the credits are exactly CREDITS."""
    mock.reply(
        [
            mock.text(text),
            metadata_event(stop_reason),
            {"type": "metering", "credits": CREDITS},
            {"type": "context_usage", "percent": 2.0},
        ],
        end=False,
    )


# --- request helpers -----------------------------------------------------------------------------


def conversation(body: dict[str, Any]) -> dict[str, Any]:
    return body["conversationState"]


def current(body: dict[str, Any]) -> dict[str, Any]:
    return conversation(body)["currentMessage"]["userInputMessage"]


def history(body: dict[str, Any]) -> list[dict[str, Any]]:
    return conversation(body).get("history", [])


def assistant_turns(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [h["assistantResponseMessage"] for h in history(body) if "assistantResponseMessage" in h]


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def dump(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else x.model_dump()


def anthropic_blocks(content: list[Any]) -> list[dict[str, Any]]:
    """Blocks reduced to their contract keys (SDK objects carry optional extras such as citations)."""
    keys = {
        "thinking": ("type", "thinking", "signature"),
        "redacted_thinking": ("type", "data"),
        "text": ("type", "text"),
    }
    out = []
    for b in content:
        d = dump(b)
        out.append({k: d.get(k) for k in keys.get(d["type"], tuple(d))})
    return out


EXPECTED_REASONING_BLOCKS = [
    {"type": "thinking", "thinking": THINKING_TEXT, "signature": SIGNATURE},
    {"type": "redacted_thinking", "data": REDACTED},
    {"type": "text", "text": ANSWER},
]


def extra(obj: Any, name: str) -> Any:
    """A member the SDK's model does not declare (pydantic extra), or None."""
    return (getattr(obj, "model_extra", None) or {}).get(name)


# === 1. native reasoning requests =================================================================


@pytest.mark.parametrize("budget,sent", [(2048, 2048), (100, 1024), (50000, 32000)], ids=["in-range", "below-min", "above-max"])
def test_anthropic_thinking_enabled_is_sent_natively_with_clamped_budget(ac, mock, budget, sent):
    mock.reply_text("ok")
    r = ac.messages.create(
        model=NATIVE,
        max_tokens=64000,
        thinking={"type": "enabled", "budget_tokens": budget},
        messages=[user("Think about 2 + 2")],
    )
    assert anthropic_blocks(r.content) == [{"type": "text", "text": "ok"}]
    body = mock.last_chat()
    assert body.get("additionalModelRequestFields") == {"thinking": {"type": "enabled", "budget_tokens": sent}}, body
    assert current(body)["modelId"] == NATIVE_KIRO
    assert "thinking_mode" not in json.dumps(body), "native reasoning must not also add prompt tags"


def test_anthropic_adaptive_thinking_with_effort_is_sent_natively(ac, mock):
    mock.reply_text("ok")
    ac.messages.create(
        model=NATIVE,
        max_tokens=MAX_TOKENS,
        thinking={"type": "adaptive"},
        output_config={"effort": "high"},
        messages=[user("Think hard")],
    )
    body = mock.last_chat()
    assert body.get("additionalModelRequestFields") == {
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
    }, body
    assert "thinking_mode" not in json.dumps(body)


def test_anthropic_adaptive_thinking_via_extra_body(ac, mock):
    # What clients whose SDK predates these fields send.
    mock.reply_text("ok")
    ac.messages.create(
        model=NATIVE,
        max_tokens=MAX_TOKENS,
        messages=[user("Think hard")],
        extra_body={"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}},
    )
    assert mock.last_chat().get("additionalModelRequestFields") == {
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
    }


@pytest.mark.parametrize("effort,sent", [("low", "low"), ("medium", "medium"), ("high", "high"), ("xhigh", "max")])
def test_openai_reasoning_effort_is_sent_natively(oc, mock, effort, sent):
    # the schema takes adaptive thinking with output_config.effort: the effort goes as it is
    # (the nearest level the schema lists), not as a budget derived from it
    mock.reply_text("ok")
    r = oc.chat.completions.create(
        model=NATIVE, reasoning_effort=effort, messages=[{"role": "user", "content": "Think about 2 + 2"}]
    )
    assert r.choices[0].message.content == "ok"
    body = mock.last_chat()
    assert body.get("additionalModelRequestFields") == {
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": sent},
    }, body
    assert current(body)["modelId"] == NATIVE_KIRO
    assert "thinking_mode" not in json.dumps(body)


def test_no_reasoning_asked_sends_no_native_fields(ac, oc, mock):
    mock.reply_text("a")
    mock.reply_text("b")
    ac.messages.create(model=NATIVE, max_tokens=MAX_TOKENS, messages=[user("hi")])
    oc.chat.completions.create(model=NATIVE, messages=[{"role": "user", "content": "hi"}])
    bodies = mock.chat_requests()
    assert len(bodies) == 2
    for body in bodies:
        assert "additionalModelRequestFields" not in body, body
        assert "thinking_mode" not in json.dumps(body)


def test_model_without_schema_keeps_prompt_tags(ac, oc, mock):
    mock.reply_text("a")
    mock.reply_text("b")
    ac.messages.create(
        model=PROMPT,
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[user("Think about 2 + 2")],
    )
    oc.chat.completions.create(
        model=PROMPT, reasoning_effort="medium", messages=[{"role": "user", "content": "Think about 2 + 2"}]
    )
    bodies = mock.chat_requests()
    assert len(bodies) == 2
    for body, budget in zip(bodies, (2048, 4000)):
        assert "additionalModelRequestFields" not in body, body
        assert current(body)["modelId"] == PROMPT_KIRO
        text = json.dumps(body, ensure_ascii=False)
        assert "<thinking_mode>enabled</thinking_mode>" in text, body
        assert f"<max_thinking_length>{budget}</max_thinking_length>" in text, body


# === 2. native reasoning in the answer ============================================================


def test_anthropic_non_stream_reasoning_blocks(ac, mock):
    reply_reasoning(mock)
    r = ac.messages.create(
        model=NATIVE,
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[user("What is 2 + 2?")],
    )
    assert anthropic_blocks(r.content) == EXPECTED_REASONING_BLOCKS
    assert r.stop_reason == "end_turn"


def test_anthropic_stream_reasoning_blocks_and_signature_delta(ac, mock):
    reply_reasoning(mock)
    with ac.messages.stream(
        model=NATIVE,
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[user("What is 2 + 2?")],
    ) as stream:
        events = [dump(e) for e in stream]
        final = stream.get_final_message()
    assert anthropic_blocks(final.content) == EXPECTED_REASONING_BLOCKS
    assert final.stop_reason == "end_turn"

    deltas = [e for e in events if e["type"] == "content_block_delta"]
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["thinking", "redacted_thinking", "text"], starts
    assert [s["index"] for s in starts] == [0, 1, 2], starts
    assert starts[1]["content_block"]["data"] == REDACTED, starts[1]
    sig = [d for d in deltas if d["delta"]["type"] == "signature_delta"]
    assert [(d["index"], d["delta"]["signature"]) for d in sig] == [(0, SIGNATURE)], deltas
    thinking = "".join(d["delta"]["thinking"] for d in deltas if d["delta"]["type"] == "thinking_delta")
    assert thinking == THINKING_TEXT
    # the signature closes the thinking block: no thinking delta after it
    kinds = [d["delta"]["type"] for d in deltas if d["index"] == 0]
    assert kinds[-1] == "signature_delta", kinds


def test_anthropic_raw_stream_signature_delta(raw, mock, api_key):
    reply_reasoning(mock)
    r = raw.post(
        "/v1/messages",
        headers={"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION},
        json={
            "model": NATIVE,
            "max_tokens": 4096,
            "stream": True,
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "messages": [user("What is 2 + 2?")],
        },
    )
    assert r.status_code == 200, r.text
    datas = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
    sig = [d for d in datas if d.get("type") == "content_block_delta" and d["delta"]["type"] == "signature_delta"]
    assert [d["delta"]["signature"] for d in sig] == [SIGNATURE], datas


def test_openai_non_stream_reasoning_content(oc, mock):
    reply_reasoning(mock)
    r = oc.chat.completions.with_raw_response.create(
        model=NATIVE, reasoning_effort="medium", messages=[{"role": "user", "content": "What is 2 + 2?"}]
    )
    body = r.http_response.json()
    msg = r.parse().choices[0].message
    assert msg.content == ANSWER
    assert extra(msg, "reasoning_content") == THINKING_TEXT
    assert body["choices"][0]["message"]["reasoning_content"] == THINKING_TEXT
    assert r.parse().choices[0].finish_reason == "stop"


def test_openai_stream_reasoning_content_deltas(oc, mock):
    reply_reasoning(mock)
    chunks = list(
        oc.chat.completions.create(
            model=NATIVE,
            reasoning_effort="medium",
            messages=[{"role": "user", "content": "What is 2 + 2?"}],
            stream=True,
        )
    )
    deltas = [c.delta for ch in chunks for c in ch.choices]
    reasoning = "".join(extra(d, "reasoning_content") or "" for d in deltas)
    content = "".join(d.content or "" for d in deltas)
    assert reasoning == THINKING_TEXT
    assert content == ANSWER
    # reasoning comes before the answer
    first_reasoning = next(i for i, d in enumerate(deltas) if extra(d, "reasoning_content"))
    first_content = next(i for i, d in enumerate(deltas) if d.content)
    assert first_reasoning < first_content
    assert [c.finish_reason for ch in chunks for c in ch.choices if c.finish_reason] == ["stop"]


def test_langchain_anthropic_thinking_blocks(gateway_url, api_key, mock):
    reply_reasoning(mock)
    llm = ChatAnthropic(
        base_url=gateway_url,
        api_key=api_key,
        model=NATIVE,
        max_tokens=4096,
        max_retries=0,
        timeout=30,
        thinking={"type": "enabled", "budget_tokens": 2048},
    )
    msg = llm.invoke("What is 2 + 2?")
    assert isinstance(msg, AIMessage)
    assert isinstance(msg.content, list), msg.content
    assert anthropic_blocks(msg.content) == EXPECTED_REASONING_BLOCKS
    assert mock.last_chat().get("additionalModelRequestFields") == {
        "thinking": {"type": "enabled", "budget_tokens": 2048}
    }
    # langchain-core's standard view: a reasoning block carrying the text (and the signature)
    reasoning = [b for b in msg.content_blocks if b["type"] == "reasoning"]
    assert reasoning and reasoning[0]["reasoning"] == THINKING_TEXT, msg.content_blocks
    assert reasoning[0].get("extras", {}).get("signature") == SIGNATURE, reasoning


def test_langchain_anthropic_stream_thinking_blocks(gateway_url, api_key, mock):
    reply_reasoning(mock)
    llm = ChatAnthropic(
        base_url=gateway_url,
        api_key=api_key,
        model=NATIVE,
        max_tokens=4096,
        max_retries=0,
        timeout=30,
        thinking={"type": "enabled", "budget_tokens": 2048},
    )
    chunks = list(llm.stream("What is 2 + 2?"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    msg = reduce(add, chunks)
    # merged chunks keep each block's stream index
    assert [b.get("index") for b in msg.content] == [0, 1, 2], msg.content
    assert anthropic_blocks(msg.content) == EXPECTED_REASONING_BLOCKS


# === 3. signed thinking sent back ================================================================


def signed_history(text: str = "Earlier reasoning.") -> list[dict[str, Any]]:
    return [
        user("What is 2 + 2?"),
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": text, "signature": SIGNATURE},
                {"type": "text", "text": "4."},
            ],
        },
        user("And 3 + 3?"),
    ]


def test_signed_thinking_goes_back_as_reasoning_content(ac, mock):
    mock.reply_text("6.")
    r = ac.messages.create(
        model=NATIVE,
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=signed_history("Two and two make four."),
    )
    assert anthropic_blocks(r.content) == [{"type": "text", "text": "6."}]
    body = mock.last_chat()
    turns = assistant_turns(body)
    assert len(turns) == 1, history(body)
    assert turns[0].get("reasoningContent") == {
        "reasoningText": {"text": "Two and two make four.", "signature": SIGNATURE}
    }, turns[0]
    assert "4." in turns[0]["content"]
    assert "And 3 + 3?" in current(body)["content"]


def test_signed_thinking_is_not_sent_to_a_model_without_schema(ac, mock):
    mock.reply_text("6.")
    ac.messages.create(
        model=PROMPT,
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=signed_history(),
    )
    turns = assistant_turns(mock.last_chat())
    assert len(turns) == 1
    assert "reasoningContent" not in turns[0], turns[0]


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_refused_signed_thinking_is_retried_without_it(ac, mock, stream):
    mock.reply_status(400, IMPROPERLY_FORMED)
    mock.reply_text("Six.")
    kwargs: dict[str, Any] = dict(
        model=NATIVE,
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=signed_history(),
    )
    if stream:
        with ac.messages.stream(**kwargs) as s:
            msg = s.get_final_message()
    else:
        resp = ac.messages.with_raw_response.create(**kwargs)
        assert resp.status_code == 200
        msg = resp.parse()
    assert anthropic_blocks(msg.content) == [{"type": "text", "text": "Six."}]
    assert msg.stop_reason == "end_turn"

    bodies = mock.chat_requests()
    assert len(bodies) == 2, bodies
    first, second = (assistant_turns(b) for b in bodies)
    assert first[0].get("reasoningContent") == {
        "reasoningText": {"text": "Earlier reasoning.", "signature": SIGNATURE}
    }
    assert "reasoningContent" not in second[0], second[0]
    assert "reasoningContent" not in json.dumps(bodies[1])
    # the retry is the same request otherwise
    assert second[0]["content"] == first[0]["content"]
    assert current(bodies[1]) == current(bodies[0])
    assert bodies[1]["additionalModelRequestFields"] == bodies[0]["additionalModelRequestFields"]


def test_400_without_signed_thinking_is_not_retried(ac, mock):
    mock.reply_status(400, IMPROPERLY_FORMED)
    mock.reply_text("never sent")
    with pytest.raises(anthropic.BadRequestError):
        ac.messages.create(
            model=NATIVE,
            max_tokens=4096,
            thinking={"type": "enabled", "budget_tokens": 2048},
            messages=[user("What is 2 + 2?")],
        )
    assert len(mock.chat_requests()) == 1


# === 4. honest usage ==============================================================================


def anthropic_create(ac: anthropic.Anthropic, model: str = PROMPT) -> tuple[Any, dict[str, Any]]:
    resp = ac.messages.with_raw_response.create(model=model, max_tokens=MAX_TOKENS, messages=[user("hi")])
    return resp.parse(), resp.http_response.json()


def openai_create(oc: openai.OpenAI, model: str = PROMPT) -> tuple[Any, dict[str, Any]]:
    resp = oc.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": "hi"}])
    return resp.parse(), resp.http_response.json()


def test_anthropic_service_usage_non_stream(ac, mock):
    reply_with_service_usage(mock)
    msg, body = anthropic_create(ac)
    u = msg.usage
    assert (u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens, u.output_tokens) == (
        120,
        3000,
        100,
        42,
    ), u
    assert body["usage"]["kiro"] == {"source": "service", "credits": CREDITS}, body["usage"]
    assert extra(u, "kiro") == {"source": "service", "credits": CREDITS}


def test_anthropic_service_usage_stream(ac, mock):
    reply_with_service_usage(mock)
    with ac.messages.stream(model=PROMPT, max_tokens=MAX_TOKENS, messages=[user("hi")]) as s:
        events = list(s)
        final = s.get_final_message()
    u = final.usage
    assert (u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens, u.output_tokens) == (
        120,
        3000,
        100,
        42,
    ), u
    md = [e for e in events if e.type == "message_delta"]
    assert len(md) == 1
    assert extra(md[0].usage, "kiro") == {"source": "service", "credits": CREDITS}, md[0].usage


def test_anthropic_no_cache_figures_without_metadata_event(ac, mock):
    mock.reply_text("plain")
    msg, body = anthropic_create(ac)
    assert msg.usage.cache_read_input_tokens is None, msg.usage
    assert msg.usage.cache_creation_input_tokens is None, msg.usage
    assert "cache_read_input_tokens" not in body["usage"] and "cache_creation_input_tokens" not in body["usage"]
    assert body["usage"]["kiro"] == {"source": "context", "credits": DEFAULT_CREDITS}, body["usage"]
    assert msg.usage.input_tokens == DEFAULT_CONTEXT_PROMPT_TOKENS, msg.usage

    mock.reply_text("plain")
    with ac.messages.stream(model=PROMPT, max_tokens=MAX_TOKENS, messages=[user("hi")]) as s:
        events = list(s)
        final = s.get_final_message()
    assert final.usage.cache_read_input_tokens is None, final.usage
    assert final.usage.cache_creation_input_tokens is None, final.usage
    md = [e for e in events if e.type == "message_delta"]
    assert extra(md[0].usage, "kiro") == {"source": "context", "credits": DEFAULT_CREDITS}


def test_openai_service_usage_non_stream(oc, mock):
    reply_with_service_usage(mock)
    r, body = openai_create(oc)
    u = r.usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (3220, 42, 3262), u
    assert u.prompt_tokens_details is not None and u.prompt_tokens_details.cached_tokens == 3000, u
    assert body["usage"]["kiro"] == {"source": "service", "credits": CREDITS}, body["usage"]
    assert extra(u, "kiro") == {"source": "service", "credits": CREDITS}


def test_openai_service_usage_stream(oc, mock):
    reply_with_service_usage(mock)
    chunks = list(
        oc.chat.completions.create(
            model=PROMPT,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    with_usage = [ch for ch in chunks if ch.usage is not None]
    assert len(with_usage) == 1, chunks
    assert with_usage[0].choices == []
    u = with_usage[0].usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (3220, 42, 3262), u
    assert u.prompt_tokens_details is not None and u.prompt_tokens_details.cached_tokens == 3000, u
    assert extra(u, "kiro") == {"source": "service", "credits": CREDITS}, u


def test_openai_no_cache_figures_without_metadata_event(oc, mock):
    mock.reply_text("plain")
    r, body = openai_create(oc)
    assert r.usage.prompt_tokens_details is None, r.usage
    assert "prompt_tokens_details" not in body["usage"], body["usage"]
    assert body["usage"]["kiro"] == {"source": "context", "credits": DEFAULT_CREDITS}, body["usage"]
    assert r.usage.prompt_tokens == DEFAULT_CONTEXT_PROMPT_TOKENS, r.usage

    mock.reply_text("plain")
    chunks = list(
        oc.chat.completions.create(
            model=PROMPT,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    u = [ch.usage for ch in chunks if ch.usage is not None]
    assert len(u) == 1
    assert u[0].prompt_tokens_details is None, u[0]
    assert extra(u[0], "kiro") == {"source": "context", "credits": DEFAULT_CREDITS}


@pytest.mark.parametrize("service", [True, False], ids=["metadata-event", "context-only"])
def test_langchain_anthropic_usage_metadata(gateway_url, api_key, mock, service):
    if service:
        reply_with_service_usage(mock)
    else:
        mock.reply_text("plain")
    llm = ChatAnthropic(base_url=gateway_url, api_key=api_key, model=PROMPT, max_tokens=MAX_TOKENS, max_retries=0, timeout=30)
    um = llm.invoke("hi").usage_metadata
    assert um is not None
    if service:
        # langchain-anthropic adds the cache figures back into input_tokens
        assert um["input_tokens"] == 120 + 3000 + 100, um
        assert um["output_tokens"] == 42, um
        assert um["input_token_details"] == {"cache_read": 3000, "cache_creation": 100}, um
    else:
        assert um["input_tokens"] == DEFAULT_CONTEXT_PROMPT_TOKENS, um
        assert "cache_read" not in um.get("input_token_details", {}), um
        assert "cache_creation" not in um.get("input_token_details", {}), um


@pytest.mark.parametrize("service", [True, False], ids=["metadata-event", "context-only"])
def test_langchain_openai_usage_metadata(api_base, api_key, mock, service):
    if service:
        reply_with_service_usage(mock)
    else:
        mock.reply_text("plain")
    llm = ChatOpenAI(base_url=api_base, api_key=api_key, model=PROMPT, max_retries=0, timeout=30)
    um = llm.invoke("hi").usage_metadata
    assert um is not None
    if service:
        assert (um["input_tokens"], um["output_tokens"], um["total_tokens"]) == (3220, 42, 3262), um
        # the OpenAI usage has no cache-write figure: only the cache read reaches LangChain
        assert um["input_token_details"] == {"cache_read": 3000}, um
    else:
        assert um["input_tokens"] == DEFAULT_CONTEXT_PROMPT_TOKENS, um
        assert "cache_read" not in um.get("input_token_details", {}), um


@pytest.mark.parametrize("service", [True, False], ids=["metadata-event", "context-only"])
def test_langchain_anthropic_stream_usage_metadata(gateway_url, api_key, mock, service):
    # message_start carries the prompt estimate, message_delta the final figures: the merged
    # usage must be the final ones, not a sum.
    if service:
        reply_with_service_usage(mock)
    else:
        mock.reply_text("plain")
    llm = ChatAnthropic(base_url=gateway_url, api_key=api_key, model=PROMPT, max_tokens=MAX_TOKENS, max_retries=0, timeout=30)
    um = reduce(add, list(llm.stream("hi"))).usage_metadata
    assert um is not None
    if service:
        assert (um["input_tokens"], um["output_tokens"]) == (3220, 42), um
        assert um["input_token_details"] == {"cache_read": 3000, "cache_creation": 100}, um
    else:
        assert um["input_tokens"] == DEFAULT_CONTEXT_PROMPT_TOKENS, um
        assert not um.get("input_token_details"), um


@pytest.mark.parametrize("service", [True, False], ids=["metadata-event", "context-only"])
def test_langchain_openai_stream_usage_metadata(api_base, api_key, mock, service):
    if service:
        reply_with_service_usage(mock)
    else:
        mock.reply_text("plain")
    llm = ChatOpenAI(base_url=api_base, api_key=api_key, model=PROMPT, max_retries=0, timeout=30, stream_usage=True)
    um = reduce(add, list(llm.stream("hi"))).usage_metadata
    assert um is not None
    if service:
        assert (um["input_tokens"], um["output_tokens"], um["total_tokens"]) == (3220, 42, 3262), um
        assert um["input_token_details"] == {"cache_read": 3000}, um
    else:
        assert um["input_tokens"] == DEFAULT_CONTEXT_PROMPT_TOKENS, um
        assert "cache_read" not in um.get("input_token_details", {}), um


# === 5. stop reasons ==============================================================================


def test_anthropic_max_tokens_stop_reason(ac, mock):
    reply_with_service_usage(mock, "Cut sho", stop_reason="MAX_TOKENS")
    r = ac.messages.create(model=PROMPT, max_tokens=MAX_TOKENS, messages=[user("hi")])
    assert anthropic_blocks(r.content) == [{"type": "text", "text": "Cut sho"}]
    assert r.stop_reason == "max_tokens"

    reply_with_service_usage(mock, "Cut sho", stop_reason="MAX_TOKENS")
    with ac.messages.stream(model=PROMPT, max_tokens=MAX_TOKENS, messages=[user("hi")]) as s:
        events = list(s)
        final = s.get_final_message()
    assert final.stop_reason == "max_tokens"
    assert [e.delta.stop_reason for e in events if e.type == "message_delta"] == ["max_tokens"]


def test_openai_max_tokens_finish_reason(oc, mock):
    reply_with_service_usage(mock, "Cut sho", stop_reason="MAX_TOKENS")
    r = oc.chat.completions.create(model=PROMPT, messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "Cut sho"
    assert r.choices[0].finish_reason == "length"

    reply_with_service_usage(mock, "Cut sho", stop_reason="MAX_TOKENS")
    chunks = list(oc.chat.completions.create(model=PROMPT, messages=[{"role": "user", "content": "hi"}], stream=True))
    assert [c.finish_reason for ch in chunks for c in ch.choices if c.finish_reason] == ["length"]
    assert "".join(c.delta.content or "" for ch in chunks for c in ch.choices) == "Cut sho"


def reply_context_only(mock: Any) -> None:
    mock.reply([{"type": "context_usage", "percent": 0.5}], end=False)


def test_anthropic_context_usage_only_is_an_empty_completion(ac, mock):
    reply_context_only(mock)
    r = ac.messages.create(model=PROMPT, max_tokens=MAX_TOKENS, messages=[user("hi")])
    assert "".join(b.text for b in r.content if b.type == "text") == ""
    assert all(b.type == "text" for b in r.content), r.content
    assert r.stop_reason == "end_turn"
    assert r.usage.input_tokens == 1000, r.usage  # 0.5 % of the 200000-token window

    reply_context_only(mock)
    with ac.messages.stream(model=PROMPT, max_tokens=MAX_TOKENS, messages=[user("hi")]) as s:
        final = s.get_final_message()
    assert "".join(b.text for b in final.content if b.type == "text") == ""
    assert final.stop_reason == "end_turn"


def test_openai_context_usage_only_is_an_empty_completion(oc, mock):
    reply_context_only(mock)
    r = oc.chat.completions.create(model=PROMPT, messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content in ("", None)
    assert not r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "stop"

    reply_context_only(mock)
    chunks = list(oc.chat.completions.create(model=PROMPT, messages=[{"role": "user", "content": "hi"}], stream=True))
    assert "".join(c.delta.content or "" for ch in chunks for c in ch.choices) == ""
    assert [c.finish_reason for ch in chunks for c in ch.choices if c.finish_reason] == ["stop"]
