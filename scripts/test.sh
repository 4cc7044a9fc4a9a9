#!/usr/bin/env bash
# The test suite on a fresh machine: services, a virtualenv with every extra, ruff, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[all]'
.venv/bin/ruff check .
# services.sh installed Chromium: here a missing browser fails the web portal tests instead of skipping them.
export VINSIGHT_REQUIRE_CHROMIUM="${VINSIGHT_REQUIRE_CHROMIUM:-1}"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
