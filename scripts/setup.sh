#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with torch (CPU wheel) and pops + test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# Never let pip resolve plain `torch`: that pulls GBs of CUDA wheels. Take the pinned CPU build first.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0"
fi
TORCH_VERSION=$(.venv/bin/python -c "import torch; print(torch.__version__.split('+')[0])")
# Constraints pin every other dependency to versions known to work together here (and torch to what is installed).
grep -v '^torch==' requirements/constraints.txt > .venv/constraints.txt
echo "torch==${TORCH_VERSION}" >> .venv/constraints.txt
stamp=.venv/.pops-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements/constraints.txt -nt "$stamp" ]; then
    .venv/bin/pip install -q --disable-pip-version-check -c .venv/constraints.txt -e ".[test]"
    touch "$stamp"
fi
