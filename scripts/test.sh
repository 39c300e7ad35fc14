#!/usr/bin/env bash
# Set up, then the whole test suite (tiny random models, plus one test on the real default model).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
