"""`larft train --dry_run`: everything a run checks before its first step, then its estimated peak
memory per device, part by part, and whether that fits. Nothing is written to output_dir and no
weights are loaded (the model's config and tokenizer only), so it runs on a laptop before GPUs are
rented. The arithmetic is `larft.memory_estimate`'s; docs/usage.md ("Training on GPUs") gives its
gap to measured peaks.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

from larft.errors import UserError
from larft.logs import get_logger

logger = get_logger(__name__)

_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}


def parse_memory(text: str) -> int:
    """'80GB' / '80 GB' / '79.6GiB' / '8e10' -> bytes (GB = 1e9, GiB = 2^30)."""
    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([kmgt]i?b?|b)?\s*", str(text).lower())
    if not match:
        raise UserError(f"--device_memory {text!r}: expected a size such as 80GB, 24GiB or 8e10")
    unit = match.group(2) or ""
    if unit and not unit.endswith("b"):
        unit += "b"
    return int(float(match.group(1)) * _UNITS[unit])


def launch_plan(accelerate_config: str | None) -> tuple[str, int]:
    """(strategy, processes) of the run: from --accelerate_config when given, else from the environment
    `accelerate launch` sets for this process (DeepSpeed stage, FSDP, WORLD_SIZE), else one process."""
    if accelerate_config:
        from larft.memory_estimate import strategy_from_accelerate_config

        if not os.path.isfile(accelerate_config):
            raise UserError(f"--accelerate_config {accelerate_config}: no such file")
        return strategy_from_accelerate_config(accelerate_config)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return f"zero{os.environ.get('ACCELERATE_DEEPSPEED_ZERO_STAGE', '2')}", world
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "fsdp", world
    return ("ddp", world) if world > 1 else ("single", 1)


def machine_memory(device_type: str) -> int | None:
    """The memory of one device of this machine: the first GPU's, or the RAM on CPU (None if unknown)."""
    if device_type == "cuda":
        import torch

        return torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
        return kib * 1024
    except (OSError, StopIteration, ValueError):
        return None


def dry_run(train_args: Any, config: Any, explicit: set[str]) -> int:
    """Check the run as `larft train` would before its first step, print the estimate, and return the exit
    status: 0 when it fits the device memory (--device_memory, else this machine's), 1 when it does not.
    `explicit`: the options the user set (file or command line), so that settings larft resolves for this
    machine (bf16) are estimated for the target device instead."""
    from transformers import AutoConfig

    from larft.generation import prompt_length
    from larft.memory_estimate import estimate_for
    from larft.run_setup import prepare_run, with_system_prompts
    from larft.train import lora_config, reward_functions

    reward_functions(getattr(train_args, "reward_funcs", None))  # imports, as a run would
    lora_config(train_args)  # PEFT installed when LoRA is asked for
    setup = prepare_run(train_args, config, hold_out=False)  # output_dir, data, tokenizer, prompt limits; writes nothing
    try:
        model_config = AutoConfig.from_pretrained(setup.model_path, trust_remote_code=config.trust_remote_code,
                                                  **({"revision": setup.init_kwargs["revision"]}
                                                     if "revision" in setup.init_kwargs else {}))
    except OSError as e:
        raise UserError(f"model {train_args.model}: {e}") from e
    prompts = with_system_prompts(setup.rows, config.system_prompt)
    longest = max((prompt_length(setup.tokenizer, r["prompt"], config.chat_template_kwargs) for r in prompts), default=0)
    strategy, processes = launch_plan(getattr(train_args, "accelerate_config", None))
    device_memory = parse_memory(train_args.device_memory) if getattr(train_args, "device_memory", None) else None
    device_type = train_args.dry_run_device or ("cuda" if device_memory or not config.use_cpu else "cpu")
    if device_memory is None:
        device_memory = machine_memory(device_type)
    settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    settings.update({"dtype": setup.init_kwargs.get("dtype"), "lora_r": getattr(train_args, "lora_r", 0),
                     "use_peft": getattr(train_args, "use_peft", False),
                     "lora_target_modules": getattr(train_args, "lora_target_modules", "all-linear")})
    if "bf16" not in explicit and device_type == "cuda":
        settings["bf16"] = None  # LARFTConfig resolved it for this machine; on CUDA it is on
    estimate = estimate_for(settings, model_config, num_processes=processes, strategy=strategy,
                            device_memory=device_memory, device_type=device_type, max_prompt_length=longest)
    rows = len(setup.rows) - len(setup.check_rows)
    print(f"[larft] dry run: {train_args.model} ({type(model_config).__name__}), {rows} training prompts "
          f"(longest {longest} tokens with the chat template), {len(setup.check_rows)} held out; "
          f"{strategy} on {processes} process(es), {device_type}")
    print(estimate.format())
    if estimate.fits is False:
        print(f"[larft] does not fit: {estimate.total / 1e9:.1f} GB estimated for {device_memory / 1e9:.1f} GB; the "
              f"biggest part is {estimate.biggest.name} ({estimate.biggest.bytes / 1e9:.1f} GB: "
              f"{estimate.biggest.note}). docs/usage.md, 'Training on GPUs', says which knob to turn first.")
        return 1
    return 0
