#!/usr/bin/env bash
# Set up, then a short LARFT run on the bundled model (6-14 minutes on 2 CPU cores, setup included).
# It ends by printing asked-vs-delivered length before and after training.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
rm -rf outputs/demo
exec .venv/bin/larft train --config configs/demo-cpu.yaml "$@"
