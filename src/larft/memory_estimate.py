"""Peak memory per device of a LARFT / GRPO training run: a pure-arithmetic estimate, part by part.

Nothing is loaded or allocated: the estimate reads a model's config (its shapes) and the run's
settings, and adds up what each part of a training step holds, for the versions larft pins (TRL 1.16,
transformers 5.x, torch 2.x). It is meant for `larft train --dry_run`: does a configuration fit the
devices it is launched on, and which part to shrink if not.

A step has four phases that never overlap; the peak is the largest of them, each counting the state
that lives through the whole run (weights, optimizer state, the reference model, vLLM's share, ...):

- `rollouts`: generating the rollouts (transformers `generate`: the KV cache of the whole local
  generation batch; vLLM colocate: its reserved share; ZeRO-3: the full weights gathered).
- `scoring`: no-grad forwards of the reference model (beta > 0) and of the policy for the old
  log-probs, one micro-batch at a time.
- `awareness`: LARFT's counting examples of one micro-batch, forward and backward on their own. Only on
  one process without DeepSpeed (`LARFTTrainer._awareness_backward_first`); otherwise the counting
  pass is built on top of the policy's graph and both are in `train`.
- `train`: the policy micro-batch, forward and backward (with the gradients and optimizer state).

The gradients count in `awareness` and `train` (from the second micro-batch of an accumulation on, they
are alive from the start), not in `rollouts` / `scoring` (torch frees them at zero_grad; DeepSpeed's
partitions stay). Transient buffers that never coexist (the LM head's backward, a recomputed layer)
count as the largest of them; the others are listed under `<phase>-alt`.

Formulas (bytes; h hidden, i intermediate, q = heads x head_dim, kv = kv_heads x head_dim, L layers,
V vocabulary, P parameters, N processes; `a` the compute dtype's bytes (2 with bf16, else 4), `r`
the residual stream's (the weights' dtype: fp32 weights under bf16 autocast keep an fp32 residual)):

- weights `P x w`, gradients `P_trainable x w`, AdamW state `2 x P_trainable x s` with s the bytes of
  the optimizer's copy (fp32 master weights under DeepSpeed bf16, else the weights' dtype: torch's
  AdamW keeps its states in the parameter dtype). Sharding over N: ZeRO-2 the gradients and the
  optimizer state, ZeRO-3 / FSDP also the weights. ZeRO-3 gathers the largest unit (a decoder
  layer or the embedding / LM head) plus one prefetched layer at a time; FSDP2 keeps its root unit
  (embeddings, LM head) gathered through the step plus two layers.
- activations saved for the backward, per token and layer (measured with saved_tensors_hooks on
  transformers' Llama / Qwen2 code, tests/test_memory_estimate.py): two RMSNorms `2 x (4h + 4 + r h)`
  (fp32 upcast, rsqrt, normed output), the linear layers' inputs (`2 r h`; under autocast over fp32
  weights each of q, k, v, gate, up saves its own bf16 cast: `5 a h`), attention `(2q + 2kv) a +
  4 heads` (SDPA / flash: q, k, v, output and the log-sum-exp, no seq^2 matrix) -- but a padded batch
  gives SDPA a mask: transformers then repeats k, v to every head (`4q a`) and SDPA keeps a float copy
  of the `seq x seq` mask in every layer (`seq x a` per token: measured on CPU; on CUDA torch converts a
  boolean mask to a float bias before any kernel too), and the gated MLP `4 i a` (gate, up,
  SiLU(gate), product). The backward has one layer's gradients in flight on top, `2 x 4h + 2 i a` per
  token. Activation checkpointing keeps each layer's input only (`r h`) and recomputes one layer at a
  time in the backward (its activations and gradients in flight).
- under bf16 autocast over fp32 weights, every forward call keeps a bf16 copy of each weight it
  multiplies, `2 x (linear parameters)` (autocast's cast, saved for the backward; with checkpointing
  held by autocast's cache until the call returns); the counting pass calls the model once or twice
  per group of rows (`awareness_loss`, up to 4 groups), so up to 8 copies, the LM head's included.
- the LM head: TRL 1.16 never materializes `rows x seq x V` logits: its fused head
  (`trl.trainer.utils.add_fused_lm_head`, `trl.kernels.ChunkedLogProbFunction`) projects tiles of
  4096 tokens x 32768 vocabulary entries, keeps 7 fp32 statistics per token, and in the backward
  accumulates the LM head's gradient in fp32 (`V x h x 4`) and the hidden states' in fp32. On CUDA
  (Triton) it scores the completion tokens only; elsewhere every position, with a few fp32
  tile-sized temporaries of the torch fallback. The counting pass computes ordinary logits for its
  label positions only (`logits_to_keep`).
- the reference model (beta > 0): its weights, sharded like the policy's under ZeRO-3 / FSDP, whole
  otherwise (TRL prepares it with ZeRO stage 0 under ZeRO-1/2).
- fixed costs (assumptions, see the constants): the CUDA context, NCCL's buffers, DeepSpeed's
  communication buckets, DDP's gradient buckets, and a share for the allocator's fragmentation.

What it leaves out: optimizer offload, tensor / sequence parallelism, MoE routing, vision towers,
fp16 loss scaling, and any activation that a model family saves beyond the Llama / Qwen2 layer above.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from larft.head_tiles import DEFAULT_TOKENS

GB = 1e9

# -- constants (each an observed value or a documented assumption) ----------------------------------
#: TRL 1.16's fused LM head tiles: tokens per projection tile (trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE)
TRL_TOKEN_TILE = 4096
#: ... and vocabulary entries per tile (trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE)
TRL_VOCAB_TILE = 32768
#: fp32 per-token statistics the fused head keeps (running max, sum of exp, ..., target logit)
TRL_HEAD_STATS = 7
#: fp32 temporaries the size of one tile alive at once in the fused head's torch fallback (no Triton: CPU),
#: counted line by line: forward (`_forward_tile`) z and exp(z - max) and their product for the entropy: 3;
#: backward (`_backward_tile`) y, z, log p, p, grad and the three temporaries of the entropy bonus's
#: gradient term: 8 (7 without an entropy bonus)
CPU_HEAD_TILE_TEMPS_FORWARD = 3
CPU_HEAD_TILE_TEMPS_BACKWARD = 8
#: tokens of the counting prompt around a rollout's text: larft's chat prompt (system message, the
#: instruction, template markers) or the release's raw-text prompt; SmolLM2's tokenizer: 47 (chat, empty
#: system message), 63 (chat, its default system message), 74 (release); rounded up for longer system prompts
AWARENESS_PROMPT_TOKENS = 80
#: tokens of a counting label, `<word_count>N</word_count>` + the end of the turn: 12-15 with SmolLM2's
#: tokenizer for N = 7..1234 (one token per digit)
AWARENESS_LABEL_TOKENS = 16
#: DeepSpeed's defaults when the config does not set them (accelerate's YAML configs do not):
#: reduce_bucket_size and allgather_bucket_size 5e8 elements, stage3_prefetch_bucket_size 5e7
DEEPSPEED_REDUCE_BUCKET = 500_000_000
DEEPSPEED_ALLGATHER_BUCKET = 500_000_000
DEEPSPEED_PREFETCH_BUCKET = 50_000_000
#: assumption: CUDA context, kernels and cuBLAS workspaces of one process (0.5-1 GB on recent GPUs)
CUDA_CONTEXT_BYTES = int(1.0 * GB)
#: assumption: NCCL's communicator buffers per process when N > 1
NCCL_BYTES = int(0.5 * GB)
#: assumption: memory PyTorch's CUDA caching allocator holds but cannot hand out (fragmentation), as a
#: share of the rest (CPU: 0; a CPU measurement with glibc mapping every large buffer shows none)
ALLOCATOR_SLACK = 0.05
#: per row of a generation step: fp32 logits of the last position, top-p's sorted copy and int64 indices
SAMPLING_BYTES_PER_VOCAB_ENTRY = 4 + 4 + 8

STRATEGIES = ("single", "ddp", "zero1", "zero2", "zero3", "fsdp")
PHASES = ("rollouts", "scoring", "awareness", "train")
ALWAYS = "all"  # a part alive in every phase


@dataclass(frozen=True)
class Part:
    """One thing in memory: `bytes` on one device, what it is (`note`), and the phase it belongs to
    (`all`: it lives through the whole run; else one of PHASES, or `train+awareness`: both)."""

    name: str
    bytes: int
    note: str
    phase: str = ALWAYS

    def alive_in(self, phase: str) -> bool:
        return self.phase == ALWAYS or phase in self.phase.split("+")


@dataclass
class Estimate:
    """The estimate of one configuration. `parts` are the parts alive in the peak phase and sum to
    `total`; `other_parts` are the transient parts of the other phases; `phases` is each phase's peak."""

    parts: list[Part]
    total: int
    device_memory: int | None
    fits: bool | None
    biggest: Part
    phase: str
    phases: dict[str, int]
    other_parts: list[Part] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def format(self) -> str:
        """A readable table in GB (1e9 bytes)."""
        s = self.settings
        head = (f"Peak memory per device ({s.get('strategy')}, {s.get('num_processes')} process(es), micro-batch "
                f"{s.get('per_device_train_batch_size')} x {s.get('seq_len')} tokens, activation checkpointing "
                f"{'on' if s.get('activation_checkpointing') else 'off'}): {self.total / GB:.1f} GB")
        if self.device_memory:
            head += f" of {self.device_memory / GB:.1f} GB: {'fits' if self.fits else 'does NOT fit'}"
        width = max(len(p.name) for p in self.parts + self.other_parts)
        lines = [head, f"peak phase: {self.phase} (the step's phases: "
                 + ", ".join(f"{k} {v / GB:.1f}" for k, v in self.phases.items()) + " GB)", ""]
        lines.append(f"{'part':<{width}}  {'GB':>7}  note")
        for p in sorted(self.parts, key=lambda p: -p.bytes):
            lines.append(f"{p.name:<{width}}  {p.bytes / GB:>7.2f}  {p.note}")
        lines.append(f"{'total':<{width}}  {self.total / GB:>7.2f}")
        if self.other_parts:
            lines += ["", "not counted at the peak (other phases, or [phase-alt]: not alive with that phase's largest "
                      "transient):"]
            for p in sorted(self.other_parts, key=lambda p: -p.bytes):
                lines.append(f"{p.name:<{width}}  {p.bytes / GB:>7.2f}  [{p.phase}] {p.note}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_bytes": self.total, "total_gb": round(self.total / GB, 3),
            "device_memory_bytes": self.device_memory, "fits": self.fits, "phase": self.phase,
            "phases_gb": {k: round(v / GB, 3) for k, v in self.phases.items()},
            "biggest": self.biggest.name,
            "parts": [{**asdict(p), "gb": round(p.bytes / GB, 3)} for p in self.parts],
            "other_parts": [{**asdict(p), "gb": round(p.bytes / GB, 3)} for p in self.other_parts],
            "settings": self.settings,
        }

    def part(self, name: str) -> Part | None:
        """The part of that name, counted at the peak or not (None if this configuration has none)."""
        return next((p for p in self.parts + self.other_parts if p.name == name), None)


# -- model shapes ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    """What the estimate reads from a decoder-only config."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    model_type: str = ""

    @property
    def q(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def layer_linear_params(self) -> int:
        """Weights of one layer's linear maps: q, k, v, o and the gated MLP's gate, up, down."""
        h = self.hidden
        return h * self.q + 2 * h * self.kv + self.q * h + 3 * h * self.intermediate

    @property
    def layer_params(self) -> int:
        h = self.hidden
        biases = (self.q + 2 * self.kv) * self.qkv_bias + h * self.o_bias + (2 * self.intermediate + h) * self.mlp_bias
        return self.layer_linear_params + biases + 2 * h + 2 * self.head_dim * self.qk_norm

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @classmethod
    def of(cls, config: Any) -> "Shape":
        if isinstance(config, Shape):
            return config
        cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
        get = (lambda k, d=None: cfg.get(k, d)) if isinstance(cfg, Mapping) else (lambda k, d=None: getattr(cfg, k, d))
        h, heads = int(get("hidden_size")), int(get("num_attention_heads"))
        model_type = str(get("model_type", "") or "")
        attention_bias = bool(get("attention_bias", False))
        qkv_bias = True if model_type == "qwen2" else attention_bias
        return cls(
            hidden=h, intermediate=int(get("intermediate_size")), layers=int(get("num_hidden_layers")),
            heads=heads, kv_heads=int(get("num_key_value_heads") or heads),
            head_dim=int(get("head_dim") or h // heads), vocab=int(get("vocab_size")),
            tied=bool(get("tie_word_embeddings", False)), qkv_bias=qkv_bias,
            o_bias=attention_bias and model_type != "qwen2", mlp_bias=bool(get("mlp_bias", False)),
            qk_norm=model_type == "qwen3", model_type=model_type,
        )


#: model families whose parameters `parameter_count` counts from the config (others: on the meta device)
FORMULA_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")


def parameter_count(config: Any) -> int:
    """Parameters of a decoder-only model from its config: embeddings `V h` (and an LM head `V h` unless
    tied), per layer q `h x q`, k and v `h x kv` each (GQA), o `q x h`, the gated MLP `3 h i`, biases
    where the family has them (Qwen2: q, k, v; Llama: `attention_bias` / `mlp_bias`), two RMSNorms `2h`
    (Qwen3: and q/k norms of `head_dim`), and the final norm `h`. Families other than FORMULA_FAMILIES
    are counted exactly by building the model on torch's meta device (no memory is allocated)."""
    shape = Shape.of(config)
    if shape.model_type and shape.model_type not in FORMULA_FAMILIES and not isinstance(config, (Mapping, Shape)):
        counted = _meta_parameter_count(config)
        if counted is not None:
            return counted
    return shape.embedding_params * (1 if shape.tied else 2) + shape.layers * shape.layer_params + shape.hidden


def _meta_parameter_count(config: Any) -> int | None:
    try:
        import torch
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return sum(p.numel() for p in model.parameters())
    except Exception as e:  # an architecture transformers cannot build: the formula's count, said so
        import logging

        logging.getLogger(__name__).warning(
            f"memory estimate: cannot build a {type(config).__name__} to count its parameters "
            f"({type(e).__name__}: {e}); counting them from its shapes as a Llama / Qwen2 layer")
        return None


def lora_parameter_count(config: Any, rank: int, targets: str | list[str] = "all-linear") -> int:
    """Trainable parameters of a LoRA adapter of `rank`: `rank x (in + out)` per adapted linear map
    (PEFT's A and B), on every layer's q, k, v, o, gate, up, down for `all-linear`, else the named ones."""
    s = Shape.of(config)
    dims = {"q_proj": (s.hidden, s.q), "k_proj": (s.hidden, s.kv), "v_proj": (s.hidden, s.kv),
            "o_proj": (s.q, s.hidden), "gate_proj": (s.hidden, s.intermediate),
            "up_proj": (s.hidden, s.intermediate), "down_proj": (s.intermediate, s.hidden)}
    names = list(dims) if targets in ("all-linear", None) else (
        [t.strip() for t in targets.split(",")] if isinstance(targets, str) else list(targets))
    return s.layers * sum(rank * sum(dims[n]) for n in names if n in dims)


# -- one forward/backward pass ---------------------------------------------------------------------------
@dataclass
class _Precision:
    """Bytes of each kind of tensor, by strategy and mixed precision."""

    weight: int        # the weights as stored on the device (sharded or not)
    compute: int       # activations (a)
    residual: int      # the residual stream (r)
    autocast: bool     # bf16 autocast over fp32 weights: per-call bf16 weight copies
    gathered: int      # a gathered (unsharded) weight under ZeRO-3 / FSDP
    master: int        # fp32 master copy (DeepSpeed mixed precision), bytes per trainable parameter
    optimizer_state: int  # bytes of each of AdamW's two states
    fp32_grad_partition: bool  # DeepSpeed mixed precision: fp32 gradients of the partition at the step


def _precision(strategy: str, dtype_bytes: int, mixed_precision: bool) -> _Precision:
    bf16 = mixed_precision or dtype_bytes == 2
    a = 2 if bf16 else 4
    if strategy in ("zero1", "zero2", "zero3"):
        # DeepSpeed with bf16 casts the module to bf16 and keeps fp32 master weights in its optimizer
        if mixed_precision:
            return _Precision(weight=2, compute=2, residual=2, autocast=False, gathered=2, master=4,
                              optimizer_state=4, fp32_grad_partition=True)
        return _Precision(dtype_bytes, a, dtype_bytes, False, dtype_bytes, 0, dtype_bytes, False)
    if strategy == "fsdp" and mixed_precision:
        # FSDP2 MixedPrecisionPolicy: shards stay in the loaded dtype, units are gathered in bf16
        return _Precision(weight=dtype_bytes, compute=2, residual=2, autocast=False, gathered=2, master=0,
                          optimizer_state=dtype_bytes, fp32_grad_partition=False)
    return _Precision(weight=dtype_bytes, compute=a, residual=dtype_bytes,
                      autocast=mixed_precision and dtype_bytes == 4, gathered=dtype_bytes, master=0,
                      optimizer_state=dtype_bytes, fp32_grad_partition=False)


def layer_bytes_per_token(shape: Shape, *, compute: int, residual: int, autocast: bool, masked: bool,
                          seq: int, keys: int | None = None) -> float:
    """Activations one decoder layer saves for the backward, per query token (see the module
    docstring). `masked`: SDPA with a padding mask (transformers then repeats k/v to every head, and
    SDPA keeps a float copy of the `seq x keys` mask per layer: `keys x a` per token). `keys`: the
    attended positions per query token when they differ from `seq` (a cached prompt prefix); the
    saved k and v then cover `keys` positions."""
    h, a, r = shape.hidden, compute, residual
    keys = seq if keys is None else keys
    norms = 2 * (4 * h + 4 + r * h)
    linear_inputs = 5 * a * h if autocast else 2 * r * h
    if masked:  # q and the output per query; k, v repeated to every head per key; the float mask
        attention = 2 * shape.q * a + (2 * shape.q * a + seq * a) * keys / seq
    else:
        attention = 2 * shape.q * a + 2 * shape.kv * a * keys / seq
    attention += 4 * shape.heads  # log-sum-exp, fp32
    qk_norm = (4 + a) * (shape.q + shape.kv) if shape.qk_norm else 0
    mlp = 4 * shape.intermediate * a
    return norms + linear_inputs + attention + qk_norm + mlp


def _inference_working_per_token(shape: Shape, *, compute: int, residual: int, masked: bool, keys: int) -> float:
    """A no-grad forward's working set per token: the residual stream and the norm's output, plus the
    larger of one layer's attention (q, k, v, k/v repeated when masked, output, the float mask's row)
    and its MLP (gate, up, SiLU(gate)); nothing is saved between layers."""
    a = compute
    attention = (2 * shape.q + 2 * shape.kv) * a + ((2 * shape.q + keys) * a if masked else 0)
    return 2 * shape.hidden * residual + max(attention, 3 * shape.intermediate * a)


def _backward_working_per_token(shape: Shape, compute: int) -> float:
    """Gradients in flight inside one layer's backward, on top of its saved activations: the residual's
    fp32 gradient twice, and in the MLP's backward the gradients of SiLU(gate) and up while gate, up and
    SiLU(gate) are still saved (`2 i a`; checked by `benchmarks/memory_estimate_check.py`)."""
    return 2 * 4 * shape.hidden + 2 * shape.intermediate * compute


@dataclass
class _Pass:
    saved: int            # activations saved for the backward (incl. the attention mask, the head's input)
    weight_copies: int    # autocast's bf16 weight copies alive at the pass's peak
    head_forward: int     # LM head buffers in the forward
    head_backward: int    # LM head buffers in the backward
    recompute: int        # activation checkpointing: one layer recomputed, its gradients in flight
    working: int          # without checkpointing: one layer's gradients in flight


def _policy_pass(shape: Shape, p: _Precision, *, rows: int, seq: int, completion: int, checkpointing: bool,
                 masked: bool, device_type: str, head_trainable: bool, fused_lm_head: bool,
                 head_token_tile: int | None = None) -> _Pass:
    """The policy micro-batch: one forward through TRL's fused LM head, and its backward. `head_token_tile`:
    the head's tokens per tile without Triton (`LARFTConfig.lm_head_token_tile`; None: TRL's)."""
    a, r, h, V = p.compute, p.residual, shape.hidden, shape.vocab
    tokens = rows * seq
    per_layer = layer_bytes_per_token(shape, compute=a, residual=r, autocast=p.autocast, masked=masked, seq=seq)
    layers = shape.layers * tokens * (r * h if checkpointing else per_layer)
    final_norm = tokens * (4 * h + 4 + r * h)
    mask = rows * seq * seq if masked else 0  # the bool 4D mask, shared by the layers
    triton = device_type == "cuda"
    scored = rows * completion if triton else rows * (seq - 1)  # Triton: completion tokens only
    token_tile = TRL_TOKEN_TILE if triton or head_token_tile is None else int(head_token_tile)
    copies_all = 2 * shape.layers * shape.layer_linear_params if p.autocast else 0
    copies_layer = 2 * shape.layer_linear_params if p.autocast else 0
    if fused_lm_head:
        head_input = scored * h * r  # the hidden states the head keeps (a copy)
        used = min(scored, token_tile) * min(V, TRL_VOCAB_TILE)  # the part a vocabulary slice fills
        # the projection buffer is a full tile wide; on CPU the columns a small vocabulary never writes
        # are never touched, so they are not resident
        tile = min(scored, token_tile) * TRL_VOCAB_TILE if triton else used
        temps_f = 0 if triton else CPU_HEAD_TILE_TEMPS_FORWARD * used * 4
        temps_b = 0 if triton else CPU_HEAD_TILE_TEMPS_BACKWARD * used * 4
        weight_cast = TRL_VOCAB_TILE * h * a if a != p.weight else 0
        stats = TRL_HEAD_STATS * scored * 4
        head_forward = tile * a + temps_f + weight_cast + stats
        head_backward = (tile * a + temps_b + weight_cast + stats + scored * h * 4 + (scored * h * r if r != 4 else 0)
                         + (V * h * 4 + (V * h * p.weight if p.weight != 4 else 0) if head_trainable else 0))
    else:  # materialized logits of the completion positions: bf16 logits, fp32 copy, log-softmax, its gradient
        head_input = 0
        logits = rows * completion * V
        head_forward = logits * (a + 4 + 4)
        head_backward = logits * (a + 4 + 4 + 4)
    saved = int(layers + final_norm + mask + head_input)
    recompute = int(tokens * (per_layer + _backward_working_per_token(shape, a)) + copies_layer) if checkpointing else 0
    working = int(tokens * _backward_working_per_token(shape, a))
    return _Pass(saved, copies_all, int(head_forward), int(head_backward), recompute, working)


def _awareness_pass(shape: Shape, p: _Precision, *, rows: int, seq: int, prefix: int, checkpointing: bool,
                    masked: bool, label_tokens: int) -> _Pass:
    """The counting examples of one micro-batch (`larft.awareness.awareness_loss`): rows sorted and run
    in `chunks` groups whose graphs all stay alive until the backward; ordinary logits for the label
    positions only. Without checkpointing the shared prompt prefix (`prefix` tokens) runs once as its
    own forward and every row attends to its keys/values (repeated per row), so each group calls the
    model twice, and each call keeps its own autocast weight copies, LM head included. With
    checkpointing the model gives no cache and every row runs whole; the backward may recompute the
    same layer of every group together (they are independent branches of one graph), so the
    recomputed layer counts every row: a bound (its gap to a measured step: benchmarks/results/memory_estimate.json)."""
    a, r, h, V = p.compute, p.residual, shape.hidden, shape.vocab
    shared = 0 if checkpointing else min(prefix, seq - 1)
    queries = seq - shared  # per row: its own tokens; the keys are the prefix's and its own
    tokens = rows * queries
    per_layer = layer_bytes_per_token(shape, compute=a, residual=r, autocast=p.autocast, masked=masked,
                                      seq=queries, keys=seq)
    if checkpointing:
        layers = shape.layers * tokens * r * h
    else:  # the prefix forward (one row) and the rows' forward over the repeated prefix keys/values
        prefix_layer = layer_bytes_per_token(shape, compute=a, residual=r, autocast=p.autocast, masked=False,
                                             seq=max(shared, 1))
        repeated_cache = rows * shared * 2 * shape.kv * a
        layers = shape.layers * (tokens * per_layer + shared * prefix_layer + repeated_cache)
    final_norm = tokens * (4 * h + 4 + r * h)
    mask = rows * queries * seq if masked else 0
    chunks = max(1, min(min(4, rows // 4), rows))
    calls = chunks if checkpointing else 2 * chunks
    per_call = 2 * (shape.layers * shape.layer_linear_params + V * h) if p.autocast else 0
    copies = per_call if checkpointing else calls * per_call
    positions = rows * (label_tokens + 1)
    head_forward = positions * V * (a + 4 + 4)  # logits, their fp32 copy, cross-entropy's log-softmax
    head_backward = positions * V * (a + 4 + 4 + 4)
    saved = int(layers + final_norm + mask)
    recompute = int(tokens * (per_layer + _backward_working_per_token(shape, a))
                    + (2 * shape.layer_linear_params if p.autocast else 0)) if checkpointing else 0
    working = int(tokens * _backward_working_per_token(shape, a))
    return _Pass(saved, int(copies), int(head_forward), int(head_backward), recompute, working)


# -- the estimate ------------------------------------------------------------------------------------------
def estimate_memory(
    model_config: Any,
    *,
    n_params: int | None = None,
    trainable_params: int | None = None,
    dtype_bytes: int = 4,
    mixed_precision: bool = True,
    strategy: str = "single",
    num_processes: int = 1,
    per_device_train_batch_size: int = 8,
    max_prompt_length: int = 1024,
    max_completion_length: int = 256,
    activation_checkpointing: bool = False,
    beta: float = 0.0,
    awareness: bool = True,
    awareness_max_text_tokens: int | None = None,
    awareness_prompt_tokens: int = AWARENESS_PROMPT_TOKENS,
    awareness_label_tokens: int = AWARENESS_LABEL_TOKENS,
    vocab_size: int | None = None,
    steps_per_generation: int = 1,
    gradient_accumulation_steps: int = 1,
    use_vllm: bool = False,
    vllm_mode: str = "colocate",
    vllm_gpu_memory_utilization: float = 0.3,
    rollout_backend: str = "hf",
    rollout_compute_bytes: int = 4,
    ds3_gather_for_generation: bool = True,
    optimizer: str = "adamw",
    attn_implementation: str = "sdpa",
    padded: bool = True,
    fused_lm_head: bool = True,
    head_token_tile: int | None = None,
    device_type: str = "cuda",
    device_memory: int | None = None,
    overhead_bytes: int | None = None,
    allocator_slack: float | None = None,
    awareness_backward_first: bool | None = None,
) -> Estimate:
    """Peak memory of one device of a LARFT / GRPO run, part by part.

    `dtype_bytes`: the dtype the model is loaded in (larft: fp32 = 4 unless --dtype bfloat16);
    `mixed_precision`: bf16 training (LARFTConfig.bf16: autocast over the loaded weights; under
    DeepSpeed bf16 weights with fp32 master weights; under FSDP2 units gathered in bf16).
    `per_device_train_batch_size`: rollouts per micro-batch; a rollout is at most `max_prompt_length +
    max_completion_length` tokens. `awareness`: lambda_max > 0, so the counting pass runs, its rows
    `awareness_prompt_tokens + min(max_completion_length, awareness_max_text_tokens) + label` long.
    `trainable_params` below `n_params`: a LoRA adapter of that many parameters on a frozen base
    (TRL then has no reference model, and the LM head gets no gradient). `device_type`: "cuda" (TRL's
    fused head runs in Triton and scores completion tokens only;
    CUDA context counted) or "cpu" (torch fallback; no fixed overhead: a CPU measurement is a delta).
    `attn_implementation` "sdpa" with `padded` batches (GRPO's are) costs the masks; "flash_attention_2"
    does not. `device_memory`: bytes per device, for `fits` and vLLM colocate's share (without it
    that share is left out).
    `overhead_bytes` / `allocator_slack` replace the fixed overhead / the fragmentation share
    (defaults: CUDA_CONTEXT_BYTES (+ NCCL_BYTES) and ALLOCATOR_SLACK on cuda, 0 and 0 on cpu).
    `awareness_backward_first`: whether the counting pass gets its own backward before the policy's
    forward (default: LARFTTrainer's rule, one process without DeepSpeed)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if optimizer not in ("adamw", "adam"):
        raise ValueError(f"optimizer: only AdamW's two states are modelled, got {optimizer!r}")
    if device_type not in ("cuda", "cpu"):
        raise ValueError(f"device_type must be 'cuda' or 'cpu', got {device_type!r}")
    shape = Shape.of(model_config)
    if vocab_size is not None:
        shape = Shape(**{**asdict(shape), "vocab": int(vocab_size)})
    n = max(1, int(num_processes)) if strategy != "single" else 1
    P = int(n_params) if n_params is not None else parameter_count(shape if vocab_size is not None else model_config)
    lora = trainable_params is not None and trainable_params < P
    Pt = int(trainable_params) if trainable_params is not None else P
    p = _precision(strategy, dtype_bytes, mixed_precision)
    shard_weights = n if strategy in ("zero3", "fsdp") else 1
    shard_grads = n if strategy in ("zero2", "zero3", "fsdp") else 1
    shard_optim = n if strategy in ("zero1", "zero2", "zero3", "fsdp") else 1
    deepspeed = strategy.startswith("zero")
    seq = max_prompt_length + max_completion_length
    rows = per_device_train_batch_size
    masked = attn_implementation != "flash_attention_2" and padded
    parts: list[Part] = []

    def add(name: str, nbytes: float, note: str, phase: str = ALWAYS) -> None:
        if nbytes > 0:
            parts.append(Part(name, int(nbytes), note, phase))

    def add_transient(candidates: dict[str, tuple[float, str]], phase: str) -> None:
        """Transient buffers of a phase that are never alive together: the largest counts, the others are
        listed under `<phase>-alt` (not counted)."""
        winner = max(candidates, key=lambda k: candidates[k][0])
        for name, (nbytes, note) in candidates.items():
            add(name, nbytes, note if name == winner else f"{note} (not alive with {winner})",
                phase if name == winner else f"{phase}-alt")

    shard_note = lambda k: "" if k == 1 else f", 1/{k} shard"  # noqa: E731
    dtype_name = {2: "bf16", 4: "fp32"}
    # persistent state
    held = P + (Pt if lora else 0)  # a LoRA adapter's weights come on top of the frozen base
    add("weights", held * p.weight / shard_weights, f"{held / 1e9:.2f}B parameters in "
        f"{dtype_name.get(p.weight, p.weight)}" + shard_note(shard_weights)
        + (" (DeepSpeed casts the model to bf16)" if deepspeed and mixed_precision else ""))
    grad_phase = ALWAYS if deepspeed else "awareness+train"  # torch frees .grad at zero_grad (set_to_none)
    add("gradients", Pt * p.weight / shard_grads, f"{Pt / 1e9:.3f}B trainable in {dtype_name.get(p.weight)}"
        + shard_note(shard_grads) + (" (LoRA adapter)" if lora else ""), grad_phase)
    if p.master:
        add("fp32 master weights", Pt * p.master / shard_optim, "DeepSpeed bf16: the optimizer's fp32 copy"
            + shard_note(shard_optim))
    if p.fp32_grad_partition:
        add("fp32 gradient partition", Pt * 4 / shard_optim, "DeepSpeed bf16: the partition's gradients in fp32 "
            "for the optimizer step" + shard_note(shard_optim))
    add("optimizer state", 2 * Pt * p.optimizer_state / shard_optim,
        f"AdamW exp_avg + exp_avg_sq in {dtype_name.get(p.optimizer_state)}" + shard_note(shard_optim))
    if strategy == "ddp":
        add("DDP gradient buckets", Pt * p.weight, "DDP's flat all-reduce buffers, as large as the gradients "
            "(gradient_as_bucket_view=False, accelerate's default)")
    if deepspeed:
        reduce_bucket = min(DEEPSPEED_REDUCE_BUCKET, Pt) * p.weight
        extra = min(DEEPSPEED_ALLGATHER_BUCKET, P) * p.weight if strategy in ("zero1", "zero2") else \
            min(DEEPSPEED_PREFETCH_BUCKET, P) * p.gathered
        add("DeepSpeed buckets", reduce_bucket + extra, "reduce bucket 5e8 elements + "
            + ("allgather bucket 5e8" if strategy != "zero3" else "prefetch bucket 5e7") + " (DeepSpeed defaults)")
    if strategy == "zero3":
        largest = max(shape.layer_params, shape.embedding_params)
        add("gathered parameters", (largest + shape.layer_params) * p.gathered,
            "ZeRO-3: the largest unit (a layer or the embedding / LM head) gathered, plus one prefetched layer")
    if strategy == "fsdp":
        root = shape.embedding_params * (1 if shape.tied else 2)
        add("gathered parameters", (root + 2 * shape.layer_params) * p.gathered + shape.layer_params * 4,
            "FSDP2: root unit (embeddings, LM head) gathered through the step, two layers, one layer's gradients")
    if beta > 0 and not lora:
        ref_shard = n if strategy in ("zero3", "fsdp") else 1
        add("reference model", P * p.weight / ref_shard, "beta > 0: a frozen copy of the policy"
            + shard_note(ref_shard))
    if use_vllm and vllm_mode == "colocate":
        if device_memory:
            add("vLLM (colocate)", vllm_gpu_memory_utilization * device_memory,
                f"vLLM reserves {vllm_gpu_memory_utilization:.0%} of the device for its weights and KV cache")
    fixed = overhead_bytes if overhead_bytes is not None else (
        (CUDA_CONTEXT_BYTES + (NCCL_BYTES if n > 1 else 0)) if device_type == "cuda" else 0)
    add("CUDA context / NCCL" if device_type == "cuda" else "fixed overhead", fixed,
        "assumption: CUDA context and cuBLAS workspaces ~1 GB" + (", NCCL buffers ~0.5 GB" if n > 1 else "")
        if overhead_bytes is None else "as given")

    # train: the policy micro-batch (and the counting examples when their backward is not done first)
    head_trainable = not lora
    policy = _policy_pass(shape, p, rows=rows, seq=seq, completion=max_completion_length,
                          checkpointing=activation_checkpointing, masked=masked, device_type=device_type,
                          head_trainable=head_trainable, fused_lm_head=fused_lm_head,
                          head_token_tile=head_token_tile)
    text = max_completion_length if awareness_max_text_tokens is None else min(max_completion_length,
                                                                               awareness_max_text_tokens)
    seq_a = awareness_prompt_tokens + text + awareness_label_tokens
    aware = _awareness_pass(shape, p, rows=rows, seq=seq_a, prefix=awareness_prompt_tokens,
                            checkpointing=activation_checkpointing, masked=masked,
                            label_tokens=awareness_label_tokens) if awareness else None
    first = (n == 1 and not deepspeed) if awareness_backward_first is None else awareness_backward_first
    ckpt = activation_checkpointing
    tag = "checkpointed layer inputs" if ckpt else "saved for the backward"
    add("activations", policy.saved, f"policy micro-batch {rows} x {seq} tokens, {tag}", "train")
    if policy.weight_copies:
        add("autocast weight copies", policy.weight_copies if not ckpt else 0,
            "bf16 copies of the fp32 linear weights saved by the policy forward", "train")
    head_note = ("TRL's fused LM head in the backward: the LM head's fp32 gradient, the hidden states' fp32 "
                 "gradient, vocabulary tiles" if fused_lm_head else
                 "materialized completion logits, their fp32 log-softmax and its gradient")
    candidates = {"logits / log-probs": (max(policy.head_forward, policy.head_backward), head_note)}
    if ckpt:
        candidates["recomputed layer"] = (policy.recompute, "activation checkpointing: one layer recomputed in the "
                                          "backward, with its gradients in flight")
        if policy.weight_copies:
            candidates["autocast weight copies + head"] = (
                policy.weight_copies + policy.head_forward,
                "bf16 copies of the fp32 weights, held by autocast's cache until the forward returns, and the head's "
                "forward tiles")
    else:
        candidates["backward working set"] = (policy.working, "one layer's gradients in flight")
    add_transient(candidates, "train")
    if aware is not None and not first:
        add("awareness activations", aware.saved + (aware.weight_copies if not ckpt else 0),
            f"counting examples {rows} x {seq_a} tokens, alive with the policy's graph (N > 1 or DeepSpeed)"
            + (", incl. autocast weight copies" if aware.weight_copies and not ckpt else ""), "train")
    if aware is not None and first:
        add("awareness activations", aware.saved, f"counting examples {rows} x {seq_a} tokens, {tag} "
            "(backward before the policy's forward: one graph at a time)", "awareness")
        if aware.weight_copies:
            add("awareness autocast weight copies", aware.weight_copies,
                "bf16 weight copies (LM head included) per model call of the counting pass"
                + (" (autocast's cache, until each call returns)" if ckpt else ""), "awareness")
        add_transient({"awareness logits": (max(aware.head_forward, aware.head_backward),
                                            "logits of the label positions, fp32 log-softmax and gradient"),
                       "awareness recomputed layer" if ckpt else "awareness backward working set": (
                           aware.recompute if ckpt else aware.working, "one layer's gradients in flight"
                           + (", recomputed" if ckpt else ""))}, "awareness")

    # rollouts and scoring
    kv_rows = rows * max(1, steps_per_generation)  # TRL: the local generation batch, generated at once
    if use_vllm and vllm_mode == "server":
        pass  # generated on other GPUs
    elif use_vllm:
        if strategy == "zero3":
            add("weight sync gather", shape.layer_params * p.gathered, "ZeRO-3: one module gathered at a time to "
                "copy into vLLM", "rollouts")
    else:
        ct2 = rollout_backend == "ct2"
        a_gen = (2 if rollout_compute_bytes == 2 else 4) if ct2 else p.compute
        kv = kv_rows * seq * 2 * shape.layers * shape.kv * a_gen
        add("KV cache", kv, f"{rollout_backend} generation of the local batch {kv_rows} x {seq} tokens", "rollouts")
        prefill = kv_rows * max_prompt_length * _inference_working_per_token(
            shape, compute=a_gen, residual=p.residual if not ct2 else a_gen, masked=masked, keys=max_prompt_length)
        add("generation working set", prefill + (kv_rows * max_prompt_length ** 2 if masked else 0)
            + kv_rows * shape.vocab * SAMPLING_BYTES_PER_VOCAB_ENTRY,
            f"prefill of {kv_rows} x {max_prompt_length} prompt tokens, one layer at a time; top-p sampling",
            "rollouts")
        if ct2:
            add("CTranslate2 weights", P * rollout_compute_bytes, "the engine's converted copy of the policy",
                "rollouts")
        if strategy == "zero3" and ds3_gather_for_generation:
            add("gathered weights for generation", P * p.gathered - (P * p.weight / shard_weights),
                "ZeRO-3 ds3_gather_for_generation: every rank holds the whole model while generating", "rollouts")
    # TRL's no-grad forwards after generation: the reference model (beta > 0), and the policy's old
    # log-probs when generation and optimizer steps are out of step or for vLLM's importance sampling
    old_logps = gradient_accumulation_steps % max(1, steps_per_generation) != 0 or use_vllm
    ref_logps = beta > 0
    scoring = old_logps or ref_logps
    if scoring:
        tokens = rows * seq
        work = tokens * (_inference_working_per_token(shape, compute=p.compute, residual=p.residual, masked=masked,
                                                      keys=seq) + shape.hidden * p.residual)
        work += (rows * seq * seq if masked else 0) + policy.head_forward
        why = ", ".join(x for x, on in (("reference log-probs", ref_logps), ("old log-probs", old_logps)) if on)
        add("scoring forward", work, f"no-grad forward of one micro-batch ({why})", "scoring")

    # allocator slack on everything, then the peak phase
    def phase_total(phase: str) -> int:
        return sum(x.bytes for x in parts if x.alive_in(phase))

    phases = {ph: phase_total(ph) for ph in PHASES}
    if not first or aware is None:
        phases.pop("awareness")
    if not scoring:
        phases.pop("scoring")
    if use_vllm and vllm_mode == "server":
        phases.pop("rollouts", None)
    peak_phase = max(phases, key=phases.get)
    share = allocator_slack if allocator_slack is not None else (ALLOCATOR_SLACK if device_type == "cuda" else 0.0)
    add("allocator slack", share * phases[peak_phase], f"assumption: {share:.0%} of the rest, held by the allocator "
        "but not usable (fragmentation)")
    phases = {ph: phase_total(ph) for ph in phases}
    at_peak = [x for x in parts if x.alive_in(peak_phase)]
    others = [x for x in parts if not x.alive_in(peak_phase)]
    total = sum(x.bytes for x in at_peak)
    settings = dict(strategy=strategy, num_processes=n, per_device_train_batch_size=rows, seq_len=seq,
                    max_prompt_length=max_prompt_length, max_completion_length=max_completion_length,
                    activation_checkpointing=activation_checkpointing, beta=beta, awareness=awareness,
                    awareness_seq_len=seq_a if awareness else None, n_params=P, trainable_params=Pt,
                    dtype_bytes=dtype_bytes, mixed_precision=mixed_precision, use_vllm=use_vllm,
                    vllm_mode=vllm_mode if use_vllm else None, rollout_backend="vllm" if use_vllm else rollout_backend,
                    steps_per_generation=steps_per_generation,
                    gradient_accumulation_steps=gradient_accumulation_steps, attn_implementation=attn_implementation,
                    device_type=device_type, awareness_backward_first=first,
                    vllm_share_left_out=bool(use_vllm and vllm_mode == "colocate" and not device_memory))
    fits = None if device_memory is None else total <= device_memory
    return Estimate(parts=at_peak, total=total, device_memory=device_memory, fits=fits,
                    biggest=max(at_peak, key=lambda x: x.bytes), phase=peak_phase, phases=phases,
                    other_parts=others, settings=settings)


# -- from a LARFT config ------------------------------------------------------------------------------------
def _get(config: Any, key: str, default: Any = None) -> Any:
    value = config.get(key, default) if isinstance(config, Mapping) else getattr(config, key, default)
    return default if value is None else value


_DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "auto": 2}


def estimate_for(config: Any, model_config: Any, *, num_processes: int = 1, strategy: str = "single",
                 device_memory: int | None = None, device_type: str = "cuda", **overrides: Any) -> Estimate:
    """The estimate of a run configured by `config`: a LARFTConfig, or the mapping of a larft YAML
    config (fields missing from a mapping take LARFTConfig's / larft's defaults). Reads
    per_device_train_batch_size, max_completion_length, max_prompt_tokens (larft's prompt limit; TRL
    1.16 has no prompt truncation), activation_checkpointing (or gradient_checkpointing), bf16 (unset:
    on for device_type cuda, as LARFTConfig does), beta, awareness_lambda_max, awareness_max_text_tokens,
    steps_per_generation (TRL: gradient_accumulation_steps when unset), use_vllm / rollout_backend,
    vllm_mode, vllm_gpu_memory_utilization, ds3_gather_for_generation, the model's dtype (dtype or
    model_init_kwargs.dtype; larft loads fp32) and lora_r. `overrides` go to `estimate_memory` as is."""
    bf16 = _get(config, "bf16")
    mixed = bool(bf16) if bf16 is not None else device_type == "cuda"
    init = _get(config, "model_init_kwargs") or {}
    if isinstance(init, str):
        import json

        init = json.loads(init)
    dtype = str(_get(config, "dtype") or init.get("dtype") or "float32").replace("torch.", "")
    lora_r = int(_get(config, "lora_r", 0) or (16 if _get(config, "use_peft", False) else 0))
    n_params = overrides.pop("n_params", None)
    trainable = overrides.pop("trainable_params", None)
    if lora_r and trainable is None:
        trainable = lora_parameter_count(model_config, lora_r, _get(config, "lora_target_modules", "all-linear"))
    ckpt = _get(config, "activation_checkpointing")
    if ckpt is None:
        ckpt = _get(config, "gradient_checkpointing", False)
    use_vllm = bool(_get(config, "use_vllm", False)) or _get(config, "rollout_backend", "hf") == "vllm"
    kwargs = dict(
        n_params=n_params, trainable_params=trainable,
        dtype_bytes=_DTYPE_BYTES.get(dtype, 4), mixed_precision=mixed, strategy=strategy,
        num_processes=num_processes,
        per_device_train_batch_size=int(_get(config, "per_device_train_batch_size", 8)),
        max_prompt_length=int(_get(config, "max_prompt_tokens", _get(config, "max_prompt_length", 1024))),
        max_completion_length=int(_get(config, "max_completion_length", 256)),
        activation_checkpointing=bool(ckpt), beta=float(_get(config, "beta", 0.001)),
        awareness=float(_get(config, "awareness_lambda_max", 0.01)) > 0,
        awareness_max_text_tokens=_get(config, "awareness_max_text_tokens"),
        steps_per_generation=int(_get(config, "steps_per_generation", _get(config, "gradient_accumulation_steps", 1))),
        gradient_accumulation_steps=int(_get(config, "gradient_accumulation_steps", 1)),
        use_vllm=use_vllm, vllm_mode=str(_get(config, "vllm_mode", "colocate")),
        vllm_gpu_memory_utilization=float(_get(config, "vllm_gpu_memory_utilization", 0.3)),
        rollout_backend=str(_get(config, "rollout_backend", "hf")),
        rollout_compute_bytes={"int8": 1, "int8_float32": 1, "int8_bfloat16": 1, "bfloat16": 2}.get(
            str(_get(config, "rollout_compute_type", "float32")), 4),
        ds3_gather_for_generation=bool(_get(config, "ds3_gather_for_generation", True)),
        head_token_tile=(config.get("lm_head_token_tile", DEFAULT_TOKENS) if isinstance(config, Mapping)
                         else getattr(config, "lm_head_token_tile", DEFAULT_TOKENS)),
        device_type=device_type, device_memory=device_memory,
    )
    kwargs.update(overrides)
    return estimate_memory(model_config, **kwargs)


def strategy_from_accelerate_config(path: str | Path) -> tuple[str, int]:
    """(strategy, num_processes) of an accelerate config file: `distributed_type` NO -> single,
    MULTI_GPU / MULTI_CPU -> ddp (single with one process), DEEPSPEED -> zero1/zero2/zero3 by
    `deepspeed_config.zero_stage` (stage 0: ddp), FSDP -> fsdp (`NO_SHARD`: ddp)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    n = int(data.get("num_processes") or 1)  # accelerate's num_processes counts every machine's
    kind = str(data.get("distributed_type", "NO")).upper()
    if kind == "DEEPSPEED":
        stage = int((data.get("deepspeed_config") or {}).get("zero_stage", 0))
        strategy = {0: "ddp", 1: "zero1", 2: "zero2", 3: "zero3"}[stage]
    elif kind == "FSDP":
        sharding = str((data.get("fsdp_config") or {}).get("fsdp_sharding_strategy", "FULL_SHARD")).upper()
        strategy = "ddp" if sharding in ("NO_SHARD", "3") else "fsdp"
    elif kind.startswith("MULTI_"):
        strategy = "ddp"
    else:
        strategy = "single"
    if strategy == "ddp" and n == 1:
        strategy = "single"
    return strategy, n if strategy != "single" else 1


def max_micro_batch(model_config: Any, device_memory: int, *, limit: int = 64, **kwargs: Any) -> int:
    """The largest `per_device_train_batch_size` (rollouts per micro-batch) that fits `device_memory`
    with the other settings of `estimate_memory(**kwargs)`; 0 when not even one rollout fits."""
    best = 0
    for rows in range(1, limit + 1):
        est = estimate_memory(model_config, **{**kwargs, "per_device_train_batch_size": rows,
                                               "device_memory": device_memory})
        if not est.fits:
            break
        best = rows
    return best


__all__ = ["Estimate", "Part", "Shape", "estimate_for", "estimate_memory", "lora_parameter_count", "max_micro_batch",
           "parameter_count", "strategy_from_accelerate_config", "layer_bytes_per_token", "GB"]
