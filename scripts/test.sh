#!/usr/bin/env bash
# The test command: set-up from zero if needed, the habit checks (lint, format, import layers), then the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
.venv/bin/lint-imports --no-cache > .venv/lint-imports.log 2>&1 || { cat .venv/lint-imports.log; exit 1; }
echo "ruff check, ruff format --check, lint-imports: clean"
exec .venv/bin/python -m pytest "$@"
