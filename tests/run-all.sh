#!/usr/bin/env bash
# The project's test command (README, .ci/run): venv + deps, a real dockerd, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
bash tests/docker-up.sh
bash tests/image-up.sh
bash tests/pg-up.sh
bash tests/browser-up.sh
bash tests/receivers-up.sh
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"
