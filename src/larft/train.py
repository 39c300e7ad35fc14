"""`larft train --method larft`, top to bottom: data -> model -> LARFTTrainer -> checkpoints and metrics.

The run's preparation (rows, held-out split, run record, tokenizer, checks) is `larft.run_setup`'s,
shared with the baselines (`larft.baselines`); `larft.cli` chooses between them by `--method`. The
names below from `larft.run_setup` are kept importable from here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from larft.config import LARFTConfig
from larft.errors import UserError
from larft.interrupt import GracefulStopCallback, TrainingInterrupted
from larft.logs import get_logger
from larft.run_setup import complete_checkpoints, prepare_run

logger = get_logger(__name__)


def check_distributed_engine(accelerator: Any) -> None:
    """Say so when `accelerate launch` was given an FSDP or DeepSpeed config that accelerate does not
    apply: it enables them only on accelerators (GPUs, ...), so on CPU processes the run is plain data
    parallel (every process holds the whole model), which would otherwise pass unnoticed."""
    from accelerate.utils import DistributedType

    for name, variable, engine in (("FSDP", "ACCELERATE_USE_FSDP", DistributedType.FSDP),
                                   ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED", DistributedType.DEEPSPEED)):
        if os.environ.get(variable, "false").lower() == "true" and accelerator.distributed_type != engine:
            shim = " (FSDP on CPU processes: set LARFT_CPU_FSDP=1, larft.cpu_fsdp)" if name == "FSDP" else ""
            logger.warning(f"the accelerate config asks for {name}, but accelerate runs this as "
                           f"{accelerator.distributed_type.value} on {accelerator.device.type}: {name} needs GPUs "
                           "(accelerate does not shard on CPU processes); every process holds the whole model"
                           + shim)


class TrainingFailed(RuntimeError):
    """A numerical fault stopped training; the message names the step and the last good checkpoint."""


def lora_config(train_args: Any) -> Any:
    """TRL's LoraConfig from the ModelConfig options (lora_r, lora_alpha, ...), or None without LoRA."""
    if not getattr(train_args, "use_peft", False):
        return None
    import importlib.util

    if importlib.util.find_spec("peft") is None:
        raise UserError("LoRA (--use_peft / --lora_r) needs PEFT: pip install 'larft[peft]'")
    from trl import get_peft_config

    return get_peft_config(train_args)


def quantization_config(train_args: Any) -> Any:
    """TRL's BitsAndBytesConfig for --load_in_4bit / --load_in_8bit (QLoRA), or None. bitsandbytes
    quantizes on CUDA only: without a GPU or the package this is one clear error, before any data
    or model is loaded."""
    bits = 4 if getattr(train_args, "load_in_4bit", False) else 8 if getattr(train_args, "load_in_8bit", False) else 0
    if not bits:
        return None
    import importlib.util

    import torch

    missing = [what for what, ok in (("a CUDA GPU", torch.cuda.is_available()),
                                     ("bitsandbytes", importlib.util.find_spec("bitsandbytes") is not None)) if not ok]
    if missing:
        raise UserError(f"--load_in_{bits}bit (QLoRA) needs a CUDA GPU and `pip install bitsandbytes`; missing "
                        f"here: {' and '.join(missing)}")
    from trl import get_quantization_config

    return get_quantization_config(train_args)


def reward_functions(paths: list[str] | None) -> list[Any]:
    """The `--reward_funcs` dotted paths (module.function), imported; the current folder is
    importable (as in TRL's grpo script). A path that does not import or names no callable is
    one clear error, before any model is loaded."""
    import importlib

    funcs = []
    if paths and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for path in paths or []:
        module_name, _, attr = path.rpartition(".")
        if not module_name:
            raise UserError(f"--reward_funcs {path}: expected a dotted path module.function, e.g. my_rewards.brevity")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            raise UserError(f"--reward_funcs {path}: cannot import module {module_name!r} ({e}); run from the folder "
                            "that holds it or put it on PYTHONPATH") from None
        except Exception as e:  # the module itself failed: show why, with --debug for its traceback
            raise UserError(f"--reward_funcs {path}: importing {module_name!r} failed: {type(e).__name__}: {e}") from e
        func = getattr(module, attr, None)
        if func is None:
            raise UserError(f"--reward_funcs {path}: module {module_name!r} has no attribute {attr!r}")
        if not callable(func):
            raise UserError(f"--reward_funcs {path}: {type(func).__name__} is not callable (expected a function "
                            "f(prompts, completions, **columns) -> list of float)")
        funcs.append(func)
    return funcs


def train(train_args: Any, config: LARFTConfig, extra_callbacks: list | None = None) -> Path:
    """A LARFT (or GRPO-only) run of `larft train`: `train_args` the TrainArguments of `larft.cli`
    (model, data, LoRA), `config` the LARFTConfig; `extra_callbacks` are added to the Trainer's.
    Returns output_dir. The baselines (--method rft / hir / dpo) are `larft.baselines.train_baseline`."""
    method = getattr(train_args, "method", "larft")
    if method != "larft":
        raise ValueError(f"larft.train.train runs --method larft; --method {method} is "
                         "larft.baselines.train_baseline (the CLI chooses by --method)")
    from datasets import Dataset

    from larft.malloc import tune_malloc
    from larft.trainer import LARFTTrainer

    tuned = tune_malloc(config.device)  # CPU training only: where it was measured to help
    quantization = quantization_config(train_args)  # user errors first: before data, model or output_dir
    reward_funcs = reward_functions(getattr(train_args, "reward_funcs", None))
    if config.resume_from_checkpoint:
        raise UserError("--resume_from_checkpoint is not how larft resumes: pass --resume true with the same "
                        "--output_dir; it continues from the newest complete checkpoint there, with its held-out "
                        "split and metrics")
    setup = prepare_run(train_args, config, hold_out=False)  # the trainer holds out and applies the system prompt
    output_dir, checkpoint, rows, tokenizer = setup.output_dir, setup.checkpoint, setup.rows, setup.tokenizer
    config.model_init_kwargs = setup.init_kwargs
    setup.write_record(train_args, config)
    stop = GracefulStopCallback()
    callbacks = [stop]  # metrics.jsonl, the length check and the budget warning are LARFTTrainer's own
    if tuned and os.environ.get("LARFT_MALLOC_TRIM_STEPS", "1") != "0":
        from larft.callbacks import ReleaseMemoryCallback

        callbacks.append(ReleaseMemoryCallback())  # the kept memory goes back between steps
    callbacks += extra_callbacks or []
    columns = list(dict.fromkeys(k for r in rows for k in r if k not in ("line", "_index", "_source")))
    trainer = LARFTTrainer(
        model=setup.model_path,
        reward_funcs=reward_funcs or None,
        args=config,
        train_dataset=Dataset.from_list([{k: r.get(k) for k in columns} for r in rows]),
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=lora_config(train_args),
        quantization_config=quantization,
    )
    trainer.dataset_name = setup.hub_dataset  # a Hub dataset: the model card links it
    check_distributed_engine(trainer.accelerator)
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except FloatingPointError as e:
        last = complete_checkpoints(output_dir)
        kept = f"the last good checkpoint is {last[0]}" if last else "no checkpoint had been saved yet"
        raise TrainingFailed(f"{e}; training stopped, {kept}") from None
    if stop.signum is not None:
        last = complete_checkpoints(output_dir)
        raise TrainingInterrupted(stop.signum, trainer.state.global_step, str(last[0]) if last else None)
    merge = bool(getattr(train_args, "use_peft", False) and train_args.merge_lora)
    trainer.merged_subfolder = MERGED_SUBFOLDER if merge else None
    trainer.create_model_card()  # README.md: the LARFT card (push_to_hub rewrites the same one)
    # with LoRA: the adapter (PeftModel.from_pretrained loads it); with --push_to_hub, transformers
    # uploads output_dir (model, card, metrics; not checkpoints) to hub_model_id here
    trainer.save_model(str(output_dir))
    if merge and trainer.accelerator.is_main_process:
        merged = merged_model(trainer, output_dir, setup.model_path, setup.init_kwargs, quantization,
                              sharded=is_sharded(trainer.accelerator))
        merged.save_pretrained(output_dir / MERGED_SUBFOLDER)
        tokenizer.save_pretrained(output_dir / MERGED_SUBFOLDER)
        logger.info(f"merged LoRA model saved to {output_dir / MERGED_SUBFOLDER}")
        if config.push_to_hub:
            push_merged(trainer, output_dir / MERGED_SUBFOLDER)
    logger.info(f"model saved to {output_dir} (metrics: {output_dir / 'metrics.jsonl'})")
    return output_dir


#: where the merged LoRA model goes, in output_dir and in the Hub repo
MERGED_SUBFOLDER = "merged"


def is_sharded(accelerator: Any) -> bool:
    """Whether the trained parameters are split over processes (FSDP, DeepSpeed ZeRO-3): then no process
    alone holds them, and an operation on them run by one process waits forever for the others."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return accelerator.distributed_type == DistributedType.DEEPSPEED and plugin is not None and plugin.zero_stage == 3


def merged_model(trainer: Any, output_dir: Path, model_path: str, init_kwargs: dict[str, Any], quantization: Any,
                 sharded: bool = False) -> Any:
    """The LoRA adapter merged into its base model, on the main process. In memory when this process holds
    the trained weights; else from the saved adapter (`save_model` gathers it on every process first) and the
    base model reloaded: a sharded model (FSDP, ZeRO-3) is not whole on any one process, and a quantized base
    (QLoRA) is reloaded unquantized, in its dtype, since merging into 4-bit weights would round the update away."""
    if quantization is None and not sharded:
        return trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    kwargs = {k: v for k, v in init_kwargs.items() if k not in ("quantization_config", "device_map")}
    base = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    return PeftModel.from_pretrained(base, output_dir).merge_and_unload()


def push_merged(trainer: Any, folder: Path) -> None:
    """Upload the merged LoRA model to the `merged/` subfolder of the run's Hub repo (beside the
    adapter that transformers' push_to_hub put at the top level): one repo per run."""
    from transformers.utils.hub import hf_api

    hf_api().upload_folder(
        repo_id=trainer.hub_model_id, folder_path=str(folder), path_in_repo=MERGED_SUBFOLDER,
        commit_message="Merged LoRA model", token=trainer.args.hub_token, revision=trainer.args.hub_revision,
    )
    logger.info(f"merged LoRA model pushed to {trainer.hub_model_id}/{MERGED_SUBFOLDER}")
