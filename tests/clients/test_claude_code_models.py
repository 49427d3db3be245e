"""Claude Code's own model names through the real anthropic SDK, with a request shaped the way
Claude Code sends it (docs clients.md section 2.4): `POST /v1/messages?beta=true`, streaming, a
system array whose first block is the attribution line, tools, `thinking: {"type": "adaptive"}`,
`output_config: {"effort": "high"}`, `metadata.user_id`, the `anthropic-beta` header and a model
id newer than any Kiro catalogue. Every answer names the Kiro model that served it in
`x-kiro-model`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

import anthropic
import pytest

from conftest import NATIVE_REASONING_MODELS

BETAS = ["claude-code-20250219", "interleaved-thinking-2025-05-14", "effort-2025-11-24"]
SYSTEM = [
    {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.300.a1b; cc_entrypoint=cli; cch=0f3e2;"},
    {
        "type": "text",
        "text": "You are Claude Code, Anthropic's official CLI for Claude.",
        "cache_control": {"type": "ephemeral"},
    },
]
TOOLS = [
    {
        "name": "Bash",
        "description": "Executes a given bash command and returns its output.",
        "input_schema": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The command to execute"},
                "timeout": {"type": "number", "description": "Optional timeout in milliseconds"},
            },
            "required": ["command"],
            "additionalProperties": False,
            "$schema": "http://json-schema.org/draft-07/schema#",
        },
    },
    {
        "name": "mcp__github__get_issue",
        "description": "Get an issue of a GitHub repository.",
        "input_schema": {
            "type": "object",
            "properties": {"number": {"type": "integer"}},
            "required": ["number"],
        },
    },
]
USER_ID = "user_" + "ab" * 32 + "_account__session_3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"


@pytest.fixture(autouse=True)
def _no_anthropic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith("ANTHROPIC_"):
            monkeypatch.delenv(k, raising=False)


@pytest.fixture
def client(gateway_url: str, api_key: str) -> Iterator[anthropic.Anthropic]:
    # Claude Code sends its key as x-api-key (ANTHROPIC_API_KEY); no SDK retries here
    with anthropic.Anthropic(
        base_url=gateway_url,
        api_key=api_key,
        max_retries=0,
        default_headers={"x-app": "cli", "User-Agent": "claude-cli/2.1.300 (external, cli)"},
    ) as c:
        yield c


def claude_code_stream(client: anthropic.Anthropic, model: str) -> tuple[Any, list[Any], Any]:
    """One main-turn request as Claude Code sends it; returns (http response, events, message)."""
    with client.beta.messages.stream(
        model=model,
        max_tokens=64000,
        system=SYSTEM,
        tools=TOOLS,
        thinking={"type": "adaptive"},
        output_config={"effort": "high"},
        metadata={"user_id": USER_ID},
        betas=BETAS,
        extra_query={"beta": "true"},
        messages=[{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
    ) as stream:
        events = list(stream)
        return stream.response, events, stream.get_final_message()


def upstream_model(body: dict[str, Any]) -> str:
    return body["conversationState"]["currentMessage"]["userInputMessage"]["modelId"]


def test_claude_code_request_with_claude_sonnet_5_is_served_by_the_newest_sonnet(client, mock):
    mock.reply([mock.text("Hello! "), mock.text("How can I help?")])
    response, events, message = claude_code_stream(client, "claude-sonnet-5")

    assert response.status_code == 200
    assert response.headers["x-kiro-model"] == "claude-sonnet-4.5"
    assert response.headers["content-type"].startswith("text/event-stream")
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Hello! How can I help?"
    assert message.model == "claude-sonnet-5"
    assert message.stop_reason == "end_turn"
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds

    body = mock.last_chat()
    assert upstream_model(body) == "claude-sonnet-4.5"
    sent = json.dumps(body)
    assert "mcp__github__get_issue" in sent and "Bash" in sent


@pytest.mark.parametrize(
    "requested,served",
    [("claude-opus-4-8", "claude-opus-4.5"), ("opus", "claude-opus-4.5"), ("haiku", "claude-haiku-4.5")],
)
def test_claude_code_family_names_and_native_effort(client, mock, requested, served):
    mock.reply_text("Done.")
    response, _, message = claude_code_stream(client, requested)

    assert response.headers["x-kiro-model"] == served
    assert message.content[0].text == "Done."
    body = mock.last_chat()
    assert upstream_model(body) == served
    if served in NATIVE_REASONING_MODELS:
        # the mock advertises adaptive thinking with an effort for this model: the effort goes
        # as it is
        assert body["additionalModelRequestFields"] == {
            "thinking": {"type": "adaptive"},
            "output_config": {"effort": "high"},
        }


def test_non_stream_answer_carries_x_kiro_model_too(client, mock):
    mock.reply_text("Probe.")
    raw = client.beta.messages.with_raw_response.create(
        model="claude-haiku-4-5-20251001",
        max_tokens=1,
        messages=[{"role": "user", "content": "ping"}],
        betas=BETAS,
    )
    assert raw.headers["x-kiro-model"] == "claude-haiku-4.5"
    assert raw.parse().content[0].text == "Probe."


def test_a_name_of_no_known_family_is_refused(client, mock):
    with pytest.raises(anthropic.BadRequestError) as info:
        client.beta.messages.create(
            model="gpt-4o", max_tokens=16, messages=[{"role": "user", "content": "hi"}], betas=BETAS
        )
    assert info.value.status_code == 400
    assert "x-kiro-model" not in info.value.response.headers
    assert info.value.response.json()["error"]["message"].startswith(
        'The model "gpt-4o" is not available through this Kiro account. Did you mean: '
    )
    assert mock.chat_requests() == []
