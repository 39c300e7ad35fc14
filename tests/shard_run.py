"""`larft train` with probes of FSDP2 sharding, for tests/test_fsdp_shard.py.

    LARFT_CPU_FSDP=1 python -m accelerate.commands.launch --config_file configs/accelerate/fsdp.yaml \
        --num_processes 2 --mixed_precision no tests/shard_run.py [--pause S] [--generate] LARFT-TRAIN-ARGS

The run is the real CLI (`larft.cli.main(["train", ...])`, which installs `larft.cpu_fsdp`); this
script only adds a callback that, on every rank after every optimizer step, appends to
OUTPUT_DIR/shards.jsonl whether every parameter of the trained model and of TRL's reference model
is a DTensor and how many elements of the trained one this rank holds, and with `--pause S`
sleeps S seconds (so that a test can kill a rank mid-run). With `--generate`, each rank generates
at the end of training from the sharded model, with prompts and a max_new_tokens of its own
(transformers' synced_gpus keeps the ranks stepping together), once by `model.generate` and once
by the length check's `generation.generate_records`, and writes what it got to shards.jsonl.
Rewards and losses per step are larft's own OUTPUT_DIR/metrics.jsonl.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

import larft.cli
import larft.train
import larft.trainer


def _record(args, record: dict) -> None:
    path = Path(args.output_dir) / "shards.jsonl"
    with open(path, "a", encoding="utf-8") as f:  # one short line per write: ranks append whole lines
        f.write(json.dumps({"rank": args.process_index, **record}) + "\n")


class ShardProbe(TrainerCallback):
    def __init__(self, pause: float = 0.0, generate: bool = False):
        self.pause = pause
        self.generate = generate
        self.ref_model = None  # TRL's reference model (beta > 0), set when the trainer is built

    def on_step_end(self, args, state, control, model=None, **kwargs):
        from torch.distributed.tensor import DTensor

        params = list(model.parameters())
        ref = list(self.ref_model.parameters()) if self.ref_model is not None else []
        _record(args, {
            "step": state.global_step, "type": type(model).__name__,
            "dtensor": bool(params) and all(isinstance(p, DTensor) for p in params),
            "ref_dtensor": bool(ref) and all(isinstance(p, DTensor) for p in ref),
            "local_numel": sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params),
            "numel": sum(p.numel() for p in params),
        })
        if self.pause:
            time.sleep(self.pause)

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if not self.generate:
            return
        import torch
        from transformers.distributed.fsdp import is_fsdp_managed_module

        from larft.generation import generate_records, weights_precision

        rank = args.process_index
        texts = ["Count the words", "In about 16 words, describe the history of tea."]
        ids = processing_class(texts[rank % 2], return_tensors="pt")
        model.eval()
        with torch.no_grad():  # a different length per rank: only synced_gpus keeps the all-gathers paired
            out = model.generate(**ids, max_new_tokens=3 + 5 * rank, min_new_tokens=3 + 5 * rank, do_sample=False)
        # the length check's own path (`LengthCheckCallback._run`), with other prompts and budgets per rank
        prompts = [[{"role": "user", "content": t}] for t in texts[: 1 + rank % 2]]
        with weights_precision(model):
            records = generate_records(model, processing_class, prompts, max_new_tokens=[2 + 6 * rank] * len(prompts))
        _record(args, {"generated": out.shape[1] - ids["input_ids"].shape[1],
                       "fsdp_managed": is_fsdp_managed_module(model), "records": [r.new_tokens for r in records],
                       "budget": [r.max_new_tokens for r in records]})


def main(argv: list[str]) -> int:
    pause, generate = 0.0, False
    while argv and argv[0] in ("--pause", "--generate"):
        if argv[0] == "--pause":
            pause, argv = float(argv[1]), argv[2:]
        else:
            generate, argv = True, argv[1:]
    probe = ShardProbe(pause, generate)

    class Trainer(larft.trainer.LARFTTrainer):  # the probe sees the reference model too
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            probe.ref_model = self.ref_model

    larft.trainer.LARFTTrainer = Trainer  # larft.train imports it when a run starts
    train = larft.train.train
    larft.train.train = lambda train_args, config: train(train_args, config, extra_callbacks=[probe])
    return larft.cli.main(["train", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
