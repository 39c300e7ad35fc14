"""LARFTConfig: TRL's GRPOConfig plus the awareness loss and the length-reward options.

Defaults differ from TRL's where LARFT or CPU use needs it: sampling at temperature 0.7 /
top_p 0.8, KL beta 0.001 and entropy bonus 0.01 (the paper's values), logging every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from larft import head_tiles
from larft.errors import UserError


ROLLOUT_BACKENDS = ("hf", "ct2", "vllm", "auto")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512_BF16 or AMX), where bf16 autocast is faster
    than fp32; without it bf16 is emulated and slower. Linux only (reads /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass
class LARFTConfig(GRPOConfig):
    awareness_lambda_max: float = field(
        default=0.01,
        metadata={"help": "Peak weight of the hindsight awareness loss (paper: 0.01; 0 = GRPO only)."},
    )
    awareness_warmup_ratio: float = field(
        default=0.1, metadata={"help": "Share of the steps over which lambda rises linearly from 0."}
    )
    awareness_max_text_tokens: int | None = field(
        default=None,
        metadata={"help": "Cut rollouts longer than this before building counting examples (None = keep whole)."},
    )
    awareness_loss_on: str = field(
        default="label",
        metadata={
            "help": "Which label tokens carry the awareness loss: 'label' (all of <word_count>N</word_count> and "
            "the end of the turn, the method) or 'number' (only the tokens of N, an option not in the paper)."
        },
    )
    awareness_prompt: str = field(
        default="chat",
        metadata={"help": "How counting examples are asked: chat (larft's instruction as a chat turn) or release "
                  "(the official release's raw-text prompt, no chat template, words only)."},
    )
    degenerate_guard: bool = field(
        default=True,
        metadata={"help": "Reward 0 for looping responses: more than 0.3 of their word 4-grams repeat an earlier one "
                  "(the eval's loop metric, larft.length.is_looping)."},
    )
    refusal_floor: float = field(
        default=0.1,
        metadata={
            "help": "Refusal floor of the length reward: an answer of <= 1 unit, or below this fraction of the "
            "target, scores 0 unless the target itself is that small (0 turns it off)."
        },
    )
    reasoning_delimiters: str = field(
        default="<think>,</think>",
        metadata={
            "help": "Reasoning block delimiters 'start,end' (pairs separated by ';', 'none' for none): the reward, "
            "the awareness label and the logs count only the answer after the reasoning, and an unclosed start "
            "means an empty answer."
        },
    )
    log_rollouts: bool = field(
        default=True,
        metadata={
            "help": "Append every training rollout (prompt, target, constraint, delivered length, reward, "
            "truncated) to OUTPUT_DIR/rollouts.jsonl."
        },
    )
    length_check_prompts: int = field(
        default=0,
        metadata={
            "help": "Before and after training, generate greedily for this many held-out prompts and print "
            "asked vs delivered length (0 = off)."
        },
    )
    rollout_backend: str = field(
        default="hf",
        metadata={
            "help": "Engine that generates the rollouts: hf (transformers generate), ct2 (CTranslate2 on CPU: the "
            "policy's weights converted in memory every step; pip install 'larft[ct2]'), vllm (TRL's vLLM path, "
            "GPU; same as use_vllm), auto (ct2 when installed, on CPU and the architecture converts, else hf)."
        },
    )
    per_target_budget: bool = field(
        default=False,
        metadata={"help": "ct2 rollouts: each rollout's budget is 2x its row's word target in tokens (capped by "
                  "max_completion_length), where a cut rollout's reward is known."},
    )
    rollout_compute_type: str = field(
        default="float32",
        metadata={
            "help": "ct2 only: the engine's weight type, float32 (the policy itself) or a quantized type such as "
            "int8, whose off-policy rollouts are importance-weighted as TRL does for vLLM (its "
            "vllm_importance_sampling_* fields; needs top_p 1 and top_k 0)."
        },
    )
    vllm_importance_sampling_mode: str | None = field(
        default=None,
        metadata={"help": "How off-policy rollouts (vLLM, quantized ct2) are importance-weighted: token_truncate, "
                  "token_mask, sequence_truncate or sequence_mask. Default: TRL's sequence_mask; token_truncate with "
                  "a quantized rollout_compute_type, whose per-token gap summed over a rollout would mask most of "
                  "them."},
    )
    system_prompt: str = field(
        default="default",
        metadata={"help": "System message before every prompt (rollouts, counting examples, length check): default "
                  "(the chat template's own), none (an empty one), short, or your own text."},
    )
    trim_padding: bool = field(
        default=True,
        metadata={"help": "Sort each optimizer step's rollouts by length among its micro-batches (after TRL's "
                  "shuffle, which still decides which rollouts each step gets) and cut each micro-batch to its own "
                  "longest rollout: the same gradients, less padding to compute."},
    )
    lm_head_token_tile: int | None = field(
        default=head_tiles.DEFAULT_TOKENS,
        metadata={"help": "Tokens per tile of TRL's fused LM head where it runs without Triton (CPU): its torch "
                  "fallback keeps ~8 fp32 temporaries of tokens x 32768 vocabulary entries (~4 GB at TRL's 4096, ~0.3 GB at 256). "
                  "None: TRL's own. Ignored on CUDA (Triton kernels, TRL's tiles)."},
    )
    # Overridden TRL defaults
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature for rollouts (paper: 0.7)."})
    top_p: float = field(default=0.8, metadata={"help": "Nucleus sampling for rollouts (paper: 0.8)."})
    beta: float = field(default=0.001, metadata={"help": "KL coefficient to the reference model (paper: 0.001)."})
    entropy_coef: float = field(default=0.01, metadata={"help": "Entropy bonus coefficient (paper: 0.01)."})
    logging_steps: float = field(default=1, metadata={"help": "Log every N optimizer steps."})
    activation_checkpointing: bool | None = field(
        default=None, metadata={"help": "Trade compute for memory (useful for large models on GPU; default off)."}
    )
    gradient_checkpointing: bool | None = field(  # TRL turns it on; transformers 5 renamed it
        default=None, metadata={"help": "Deprecated alias of activation_checkpointing (transformers 5)."}
    )
    bf16: bool | None = field(
        default=None,
        metadata={"help": "bf16 autocast (default: on with CUDA, and on CPUs that compute bf16 natively; else off)."},
    )
    report_to: None | str | list[str] = field(
        default="tensorboard", metadata={"help": "Loggers: tensorboard, wandb, none, ..."}
    )

    def __post_init__(self):
        import torch

        mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
        if not torch.cuda.is_available() and not mps and not self.use_cpu:
            # on a machine without GPUs, `accelerate launch --multi_gpu` / torchrun processes then
            # form a CPU (gloo) process group instead of running unaware of each other (Apple MPS keeps its GPU)
            self.use_cpu = True
        if self.bf16 is None:  # autocast: fp32 weights and optimizer, bf16 matmuls; TRL's log-softmax stays fp32
            on_gpu = torch.cuda.is_available() and not self.use_cpu
            self.bf16 = not self.fp16 and (on_gpu or (not torch.cuda.is_available() and not mps and cpu_has_native_bf16()))
        if self.rollout_backend not in ROLLOUT_BACKENDS:
            raise UserError(f"rollout_backend: unknown value {self.rollout_backend!r}; expected one of "
                            f"{', '.join(ROLLOUT_BACKENDS)}")
        if self.rollout_backend == "vllm":
            self.use_vllm = True
        if self.vllm_importance_sampling_mode is None:
            from larft.ct2_engine import is_quantized  # light: no CTranslate2 import

            quantized = is_quantized(self.rollout_compute_type)
            self.vllm_importance_sampling_mode = "token_truncate" if quantized else "sequence_mask"
        super().__post_init__()
        if self.awareness_lambda_max < 0:
            raise UserError(f"awareness_lambda_max must be >= 0, got {self.awareness_lambda_max}")
        from larft.awareness import LOSS_ON

        from larft.awareness import PROMPT_STYLES

        if self.awareness_prompt not in PROMPT_STYLES:
            raise UserError(f"awareness_prompt must be one of {', '.join(PROMPT_STYLES)}, got {self.awareness_prompt!r}")
        if self.awareness_loss_on not in LOSS_ON:
            raise UserError(f"awareness_loss_on must be one of {', '.join(LOSS_ON)}, got {self.awareness_loss_on!r}")
        if not 0.0 <= self.refusal_floor < 1.0:
            raise UserError(f"refusal_floor must be in [0, 1), got {self.refusal_floor}")
        from larft.length import parse_delimiters

        parse_delimiters(self.reasoning_delimiters)  # a malformed value fails here, not mid-training
        if not 0.0 <= self.awareness_warmup_ratio < 1.0:
            raise UserError(f"awareness_warmup_ratio must be in [0, 1), got {self.awareness_warmup_ratio}")
