"""The real command-line clients, unmodified, against the gateway on the mock upstream.

Claude Code and Codex as users install them (`npm install -g @anthropic-ai/claude-code @openai/codex`;
.ci/run pins the versions). What the SDK tests cannot show is what these programs do on their own:
their default model names, their retries, the tools they offer and how they run them.

They talk to their vendors too (telemetry, update checks), so this module runs only inside a
loopback-only network namespace, where nothing but the gateway and the mock can be reached:

    unshare -n sh -c 'ip link set lo up && CLIENT_TESTS=tests/clients/test_real_clients.py bash tests/clients/run.sh'

Elsewhere it is skipped; REQUIRE_REAL_CLIENTS=1 (set by .ci/run) turns a skip into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, Mock

CLIENT_TIMEOUT_S = 120


def _isolated() -> bool:
    """True in a network namespace with no interface but loopback."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def _need(binary: str) -> str:
    why = None
    path = shutil.which(binary)
    if path is None:
        why = f"{binary} is not installed (npm install -g @anthropic-ai/claude-code @openai/codex)"
    elif not _isolated():
        why = "not in a loopback-only network namespace (see the module docstring)"
    if why is None:
        return path  # type: ignore[return-value]
    if os.environ.get("REQUIRE_REAL_CLIENTS") == "1":
        pytest.fail(f"REQUIRE_REAL_CLIENTS=1 but {why}", pytrace=False)
    pytest.skip(why)


def _all_chats(mock: Mock) -> list[dict[str, Any]]:
    return mock.chat_requests()


def _model_ids(mock: Mock) -> list[str]:
    return [
        c["conversationState"]["currentMessage"]["userInputMessage"]["modelId"] for c in _all_chats(mock)
    ]


def _tool_names(chat: dict[str, Any]) -> list[str]:
    ctx = chat["conversationState"]["currentMessage"]["userInputMessage"].get("userInputMessageContext", {})
    return [t["toolSpecification"]["name"] for t in ctx.get("tools", [])]


def _catalogue(gateway_url: str, api_key: str) -> list[str]:
    import httpx

    r = httpx.get(gateway_url + "/v1/models", headers={"Authorization": f"Bearer {api_key}"}, trust_env=False)
    r.raise_for_status()
    return [m["id"] for m in r.json()["data"]]


def _newest(ids: list[str], family: str) -> str:
    def version(i: str) -> tuple[int, ...]:
        return tuple(int(p) for p in i.replace("-", ".").split(".") if p.isdigit())

    return max((i for i in ids if family in i), key=version)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def _claude(
    gateway_url: str, key: str, home: Path, *args: str, timeout: float = CLIENT_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    binary = _need("claude")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": gateway_url,
        "ANTHROPIC_API_KEY": key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }
    return subprocess.run(
        [binary, "-p", *args],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _codex(gateway_url: str, key: str, home: Path, *args: str, config: str = "") -> subprocess.CompletedProcess[str]:
    binary = _need("codex")
    codex_home = home / ".codex"
    codex_home.mkdir(exist_ok=True)
    (codex_home / "config.toml").write_text(
        'model = "claude-sonnet-4.5"\n'
        'model_provider = "kiro"\n'
        f"{config}\n"
        "[model_providers.kiro]\n"
        'name = "Kiro gateway"\n'
        f'base_url = "{gateway_url}/v1"\n'
        'env_key = "KIRO_GATEWAY_KEY"\n'
        'wire_api = "responses"\n'
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
        "\n[analytics]\nenabled = false\n"
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "CODEX_HOME": str(codex_home),
        "KIRO_GATEWAY_KEY": key,
    }
    return subprocess.run(
        [binary, "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox", *args],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )


def _said(p: subprocess.CompletedProcess[str]) -> str:
    return f"rc={p.returncode}\n--- stdout\n{p.stdout[-4000:]}\n--- stderr\n{p.stderr[-4000:]}"


# --- Claude Code -------------------------------------------------------------------------------


def test_claude_code_works_out_of_the_box_with_its_own_model_name(
    mock: Mock, gateway_url: str, api_key: str, home: Path
) -> None:
    """`claude -p hello` with no model setting: Claude Code sends its own default id, newer than
    any catalogue; the gateway serves it with the newest model of that family."""
    p = _claude(gateway_url, api_key, home, "say hello")
    assert p.returncode == 0, _said(p)
    assert "Hello from the kiro-gateway demo upstream" in p.stdout, _said(p)
    catalogue = _catalogue(gateway_url, api_key)
    used = _model_ids(mock)
    assert used, "Claude Code sent nothing to Kiro"
    assert all(m in catalogue for m in used), (used, catalogue)
    # its main turn is an opus model by default (a claude.ai-less key user)
    assert _newest(catalogue, "opus") in used or _newest(catalogue, "sonnet") in used, used


def test_claude_code_reads_a_file_through_a_tool_call_and_answers(
    mock: Mock, gateway_url: str, api_key: str, home: Path
) -> None:
    marker = "real-client-marker-4711"
    target = home / "notes.txt"
    target.write_text(f"the marker is {marker}\n")
    mock.reply([Mock.tool_call("tooluse_read_1", "Read", json.dumps({"file_path": str(target)}))])
    mock.reply([Mock.text("The file says the marker is there.")])
    p = _claude(gateway_url, api_key, home, "what is in notes.txt?")
    assert p.returncode == 0, _said(p)
    assert "The file says the marker is there." in p.stdout, _said(p)
    chats = _all_chats(mock)
    # the tool was offered, and its result (the file's text) went back to Kiro
    assert any("Read" in _tool_names(c) for c in chats), [_tool_names(c) for c in chats]
    assert any(marker in json.dumps(c) for c in chats[1:]), "the Read result never reached Kiro"


def test_claude_code_gives_up_on_a_wrong_key_at_once(
    mock: Mock, gateway_url: str, api_key: str, home: Path
) -> None:
    """A 401 carries `x-should-retry: false`: Claude Code says so instead of retrying for minutes
    (it retried eleven times over three minutes without the header)."""
    started = time.monotonic()
    try:
        p = _claude(gateway_url, "not-the-key", home, "say hello", timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("Claude Code was still retrying a wrong key after 60 s")
    elapsed = time.monotonic() - started
    assert p.returncode != 0, _said(p)
    out = (p.stdout + p.stderr).lower()
    assert "invalid api key" in out or "401" in out, _said(p)
    assert elapsed < 60, f"Claude Code took {elapsed:.0f} s to give up on a wrong key\n{_said(p)}"
    assert _all_chats(mock) == [], "a request with a wrong key reached Kiro"


# --- Codex -------------------------------------------------------------------------------------


def test_codex_answers(mock: Mock, gateway_url: str, api_key: str, home: Path) -> None:
    p = _codex(gateway_url, api_key, home, "say hello")
    assert p.returncode == 0, _said(p)
    assert "Hello from the kiro-gateway demo upstream" in p.stdout, _said(p)
    assert _model_ids(mock) == ["claude-sonnet-4.5"]


def test_codex_runs_a_command_through_a_tool_call_and_answers(
    mock: Mock, gateway_url: str, api_key: str, home: Path
) -> None:
    marker = "codex-marker-0815"
    first = _codex(gateway_url, api_key, home, "warm-up")
    assert first.returncode == 0, _said(first)
    tools = _tool_names(_all_chats(mock)[-1])
    shell = next((t for t in ("exec_command", "shell_command", "shell") if t in tools), None)
    assert shell is not None, tools
    args = {"cmd": f"echo {marker}"} if shell == "exec_command" else {"command": ["echo", marker]}
    if shell == "shell_command":
        args = {"command": f"echo {marker}"}
    mock.reset()
    mock.reply([Mock.tool_call("tooluse_exec_1", shell, json.dumps(args))])
    mock.reply([Mock.text("The command printed the marker.")])
    p = _codex(gateway_url, api_key, home, "run the echo")
    assert p.returncode == 0, _said(p)
    assert "The command printed the marker." in p.stdout, _said(p)
    chats = _all_chats(mock)
    assert len(chats) == 2, _model_ids(mock)
    assert marker in json.dumps(chats[1]), "the command's output never reached Kiro"


def test_codex_sub_agent_tools_reach_the_model(mock: Mock, gateway_url: str, api_key: str, home: Path) -> None:
    """Codex offers its sub-agent tools in a `namespace` tool; each inner tool reaches Kiro as
    `<namespace>__<name>`."""
    p = _codex(gateway_url, api_key, home, "say hello")
    assert p.returncode == 0, _said(p)
    tools = _tool_names(_all_chats(mock)[-1])
    namespaced = [t for t in tools if "__" in t]
    assert any(t.startswith("multi_agent_v1__") for t in namespaced), tools


def test_codex_with_the_shipped_model_catalogue_offers_apply_patch(
    mock: Mock, gateway_url: str, api_key: str, home: Path
) -> None:
    """examples/codex/model_catalog.json gives Codex metadata for Claude ids: no fallback warning,
    and its freeform apply_patch tool is offered."""
    catalog = REPO / "examples" / "codex" / "model_catalog.json"
    assert catalog.is_file(), catalog
    p = _codex(gateway_url, api_key, home, "say hello", config=f'model_catalog_json = "{catalog}"')
    assert p.returncode == 0, _said(p)
    assert "Model metadata for" not in p.stderr, _said(p)
    tools = _tool_names(_all_chats(mock)[-1])
    assert "apply_patch" in tools, tools
