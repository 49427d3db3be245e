#!/usr/bin/env bash
# Runs the Python client tests (openai and anthropic SDKs, langchain-openai, langchain-anthropic)
# against the gateway and the mock Kiro upstream. It builds nothing: the binaries must already
# exist (default target/debug/kiro-gateway and target/debug/examples/mock_kiro, or
# KIRO_GATEWAY_BIN and MOCK_KIRO_BIN). CLIENT_TESTS names the test files or folders to run (default
# tests/clients); extra arguments go to pytest. Exits with pytest's exit code.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"

VENV="$REPO/.venv-clients"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# Keep the venv out of git (Python 3.13+ does this itself; 3.11 does not).
[ -f "$VENV/.gitignore" ] || echo '*' > "$VENV/.gitignore"

"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r tests/clients/requirements.txt

set +e
# shellcheck disable=SC2086 # CLIENT_TESTS may name several paths
"$VENV/bin/python" -m pytest -q -p no:cacheprovider ${CLIENT_TESTS:-tests/clients} "$@"
rc=$?
set -e
exit "$rc"
