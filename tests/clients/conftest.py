"""Session fixtures for the client tests: a mock Kiro upstream and the gateway, both real processes.

The binaries are taken from MOCK_KIRO_BIN and KIRO_GATEWAY_BIN, by default the debug builds under
target/ (built by the Rust side; this suite never builds anything). Both only bind 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
API_KEY = "test-key"
READY_TIMEOUT_S = 30.0
CHAT_PATH = "/generateAssistantResponse"
# Models the mock advertises native reasoning for (an additionalModelRequestFieldsSchema), so the
# gateway sends `additionalModelRequestFields` for them instead of prompt tags. Only these: every
# other model keeps prompt-tag reasoning (test_currency.py covers the native path).
NATIVE_REASONING_MODELS = ("claude-opus-4.5",)

# Every request of this suite goes to loopback: never through a proxy from the environment.
for _var in ("NO_PROXY", "no_proxy"):
    _current = os.environ.get(_var, "")
    os.environ[_var] = ",".join(p for p in (_current, "127.0.0.1", "localhost") if p)

# Inherited variables that could point the gateway at other credentials, hosts or settings
# (the gateway's configuration variables): the tests set the ones they need and drop the rest.
_GATEWAY_ENV_PREFIXES = (
    "KIRO_", "SERVER_", "PROFILE_ARN", "FAKE_REASONING", "DEBUG_", "FIRST_TOKEN_", "STREAMING_",
    "RETRY_", "TOKEN_REFRESH_", "MODEL_CACHE_", "UNKNOWN_MODEL_", "TOOL_DESCRIPTION_", "CORS_", "LOG_",
    "ACCOUNT_", "STICKY_", "METRICS_", "ADMIN_", "RESPONSES_",
)
_GATEWAY_ENV_NAMES = {
    "PROXY_API_KEY", "REFRESH_TOKEN", "VPN_PROXY_URL", "CONNECT_TIMEOUT", "MAX_BODY_BYTES",
    "AUTO_TRIM_PAYLOAD", "REASONING_MODE", "MODEL_ALIASES", "HEADER_READ_TIMEOUT", "SHUTDOWN_GRACE_SECS", "WORKER_THREADS",
}


def _binary(env_var: str, default: str) -> Path:
    p = Path(os.environ.get(env_var) or default)
    return p if p.is_absolute() else REPO / p


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _non_loopback_listeners(port: int) -> list[str]:
    """Listening sockets on `port` whose address is not loopback (Linux /proc; [] elsewhere)."""
    loopback = {
        "0100007F",  # 127.0.0.1 (tcp)
        "00000000000000000000000001000000",  # ::1
        "0000000000000000FFFF00000100007F",  # ::ffff:127.0.0.1
    }
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "0A":  # 0A = LISTEN
                continue
            addr, _, port_hex = fields[1].partition(":")
            if int(port_hex, 16) == port and addr.upper() not in loopback:
                found.append(f"{table}: {addr}")
    return found


class Process:
    """A child process whose stdout and stderr go to files (no pipe can fill up and block it)."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path, logdir: Path):
        self.name = name
        self.cmd = cmd
        self.stdout_path = logdir / f"{name}.stdout.log"
        self.stderr_path = logdir / f"{name}.stderr.log"
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err
        )

    def output(self, limit: int = 20_000) -> str:
        parts = []
        for label, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                text = ""
            parts.append(f"--- {self.name} {label} ({path}) ---\n{text[-limit:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._out.close()
        self._err.close()


def _start(
    name: str,
    binary: Path,
    env: dict[str, str],
    cwd: Path,
    logdir: Path,
    ready: Callable[[str], bool],
    args: Iterable[str] = (),
) -> tuple[Process, str]:
    """Start `binary --port P [args...]` on a free port and wait until `ready(url)`; retried on
    another port if the process dies at once (a port taken between picking and binding)."""
    extra = list(args)
    if not binary.is_file():
        pytest.fail(
            f"{name} binary not found at {binary}; build it first (cargo build --examples --bins) "
            f"or point the environment variable at it",
            pytrace=False,
        )
    last_output = ""
    for attempt in range(3):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        proc = Process(f"{name}-{attempt}", [str(binary), "--port", str(port), *extra], env, cwd, logdir)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.proc.poll() is not None:
                break
            try:
                if ready(url):
                    bad = _non_loopback_listeners(port)
                    if bad:
                        proc.stop()
                        pytest.fail(
                            f"{name} listens on a non-loopback address ({bad}); the tests must "
                            f"only bind 127.0.0.1\n{proc.output()}",
                            pytrace=False,
                        )
                    return proc, url
            except httpx.HTTPError:
                pass
            except RuntimeError as e:
                proc.stop()
                pytest.fail(f"{name}: {e}\n{proc.output()}", pytrace=False)
            time.sleep(0.1)
        else:
            proc.stop()
            pytest.fail(
                f"{name} was not ready at {url} within {READY_TIMEOUT_S:.0f} s\n{proc.output()}",
                pytrace=False,
            )
        # The process exited before it was ready.
        proc.stop()
        last_output = proc.output()
        if "address" not in last_output.lower() or "in use" not in last_output.lower():
            break
    pytest.fail(f"{name} exited before it was ready (rc={proc.proc.returncode})\n{last_output}", pytrace=False)


def _probe(url: str, path: str, expect: int = 200) -> bool:
    with httpx.Client(trust_env=False, timeout=2.0) as c:
        r = c.get(url + path)
    if r.status_code == 404 and path.startswith("/__mock/"):
        raise RuntimeError(f"the mock at {url} has no control API ({path} answered 404): rebuild mock_kiro")
    return r.status_code == expect


@pytest.fixture(scope="session")
def _logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("client-procs")


def start_mock(logdir: Path, name: str = "mock_kiro") -> tuple[Process, str]:
    """Start a mock Kiro upstream (the suite's options); the caller stops it."""
    binary = _binary("MOCK_KIRO_BIN", "target/debug/examples/mock_kiro")
    env = dict(os.environ)
    args = [a for m in NATIVE_REASONING_MODELS for a in ("--reasoning-schema", m)]
    return _start(name, binary, env, logdir, logdir, lambda u: _probe(u, "/__mock/requests"), args)


@pytest.fixture(scope="session")
def mock_process(_logdir: Path) -> Iterator[tuple[Process, str]]:
    proc, url = start_mock(_logdir)
    yield proc, url
    proc.stop()


@pytest.fixture(scope="session")
def mock_url(mock_process: tuple[Process, str]) -> str:
    return mock_process[1]


def start_gateway(
    mock_url: str, logdir: Path, name: str = "kiro-gateway", extra_env: dict[str, str] | None = None
) -> tuple[Process, str]:
    """Start a gateway on the mock at `mock_url`, with the suite's settings plus `extra_env`
    (e.g. a setting a test module needs a second gateway for). The caller stops it."""
    binary = _binary("KIRO_GATEWAY_BIN", "target/debug/kiro-gateway")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_GATEWAY_ENV_PREFIXES) and k not in _GATEWAY_ENV_NAMES
    }
    env.update(
        PROXY_API_KEY=API_KEY,
        REFRESH_TOKEN="mock-refresh-0",
        KIRO_API_URL=mock_url,
        KIRO_DESKTOP_AUTH_URL=mock_url,
        KIRO_OIDC_URL=mock_url,
        FAKE_REASONING="false",
        LOG_LEVEL="debug",
        # Loopback only (also the gateway's default); the listening address is checked too.
        SERVER_HOST="127.0.0.1",
    )
    env.update(extra_env or {})
    # Its own working directory: no stray .env or config.toml is read, no debug files land in the repo.
    workdir = logdir / f"{name}-cwd"
    workdir.mkdir(exist_ok=True)
    return _start(name, binary, env, workdir, logdir, lambda u: _probe(u, "/health"))


@pytest.fixture(scope="session")
def gateway_process(mock_url: str, _logdir: Path) -> Iterator[tuple[Process, str]]:
    proc, url = start_gateway(mock_url, _logdir)
    yield proc, url
    proc.stop()


@pytest.fixture(scope="session")
def gateway_url(gateway_process: tuple[Process, str]) -> str:
    """Root URL of the gateway, e.g. http://127.0.0.1:PORT (the OpenAI base is this + /v1)."""
    return gateway_process[1]


@pytest.fixture(scope="session")
def api_base(gateway_url: str) -> str:
    return gateway_url + "/v1"


@pytest.fixture(scope="session")
def api_key() -> str:
    return API_KEY


@pytest.fixture
def gateway_log(gateway_process: tuple[Process, str]) -> Callable[[], str]:
    """The gateway's captured output so far, for assertion messages."""
    return gateway_process[0].output


class Mock:
    """Client of the mock's control API (see src/mock/control.rs)."""

    def __init__(self, url: str):
        self.url = url
        self._http = httpx.Client(base_url=url, trust_env=False, timeout=10.0)

    def close(self) -> None:
        self._http.close()

    # event builders
    @staticmethod
    def text(text: str) -> dict[str, Any]:
        return {"type": "text", "text": text}

    @staticmethod
    def tool_call(id: str, name: str, arguments: str, fragment: int | None = None) -> dict[str, Any]:
        ev: dict[str, Any] = {"type": "tool_call", "id": id, "name": name, "arguments": arguments}
        if fragment is not None:
            ev["fragment"] = fragment
        return ev

    # control API
    def reset(self) -> None:
        r = self._http.post("/__mock/reset")
        r.raise_for_status()

    def reply(
        self,
        events: Iterable[dict[str, Any]] = (),
        *,
        end: bool = True,
        faults: Iterable[dict[str, Any]] = (),
        header_delay_ms: int | None = None,
    ) -> None:
        """Queue one streamed reply for the next chat request."""
        spec: dict[str, Any] = {"events": list(events), "end": end, "faults": list(faults)}
        if header_delay_ms is not None:
            spec["header_delay_ms"] = header_delay_ms
        self._post_reply(spec)

    def reply_text(self, *pieces: str) -> str:
        """Queue a reply made of these text events; returns the text a client should see."""
        self.reply([self.text(p) for p in pieces])
        return "".join(pieces)

    def reply_status(self, status: int, body: str = "") -> None:
        """Queue one HTTP error answer for the next chat request."""
        self._post_reply({"status": status, "body": body})

    def _post_reply(self, spec: dict[str, Any]) -> None:
        r = self._http.post("/__mock/replies", content=json.dumps(spec).encode())
        assert r.status_code == 200, f"mock refused reply {spec}: {r.status_code} {r.text}"

    def requests(self) -> list[dict[str, Any]]:
        r = self._http.get("/__mock/requests")
        r.raise_for_status()
        return r.json()

    def chat_requests(self) -> list[dict[str, Any]]:
        """Bodies of the generateAssistantResponse requests received since the last reset."""
        return [
            r["body"]
            for r in self.requests()
            if r["method"] == "POST" and r["path"].split("?")[0] == CHAT_PATH
        ]

    def last_chat(self) -> dict[str, Any]:
        bodies = self.chat_requests()
        assert bodies, f"the mock received no chat request; it received {self.requests()}"
        return bodies[-1]


@pytest.fixture(scope="session")
def _mock_client(mock_url: str) -> Iterator[Mock]:
    m = Mock(mock_url)
    yield m
    # every request the gateway sent during the session must have been well formed: the mock
    # refuses (and records) what the service would refuse (spec 3.2)
    rejected = m._http.get("/__mock/rejections").json()
    m.close()
    assert rejected == [], f"the mock refused requests as the service would: {rejected}"


@pytest.fixture
def mock(_mock_client: Mock, gateway_url: str) -> Mock:
    """The mock, reset (empty reply queue, no recorded requests) with the gateway running."""
    _mock_client.reset()
    return _mock_client


@contextlib.contextmanager
def _extra_stack(logdir: Path, name: str, gateway_env: dict[str, str]) -> Iterator[tuple[Mock, str]]:
    procs: list[Process] = []
    mock_client = None
    try:
        mock_proc, mock_url = start_mock(logdir, f"mock_kiro-{name}")
        procs.append(mock_proc)
        gw_proc, gw_url = start_gateway(mock_url, logdir, f"kiro-gateway-{name}", gateway_env)
        procs.append(gw_proc)
        mock_client = Mock(mock_url)
        yield mock_client, gw_url
    finally:
        if mock_client is not None:
            mock_client.close()
        for p in reversed(procs):
            p.stop()


@pytest.fixture(scope="session")
def extra_stack(_logdir: Path) -> Callable[[str, dict[str, str]], contextlib.AbstractContextManager[tuple[Mock, str]]]:
    """`with extra_stack(name, env) as (mock, gateway_url):` one more mock and a gateway on it
    with the suite's settings plus `env`, for a module that needs a setting the session gateway
    does not have. Its own mock, not the session one: the mock rotates refresh tokens, so a
    second gateway starting from the initial REFRESH_TOKEN is refused once the first refreshed."""
    return lambda name, env: _extra_stack(_logdir, name, env)


@pytest.fixture
def raw(gateway_url: str) -> Iterator[httpx.Client]:
    """A plain httpx client on the gateway root, for what the SDKs hide (raw bodies, SSE lines)."""
    with httpx.Client(base_url=gateway_url, trust_env=False, timeout=30.0) as c:
        yield c
