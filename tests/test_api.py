"""The front door: `from larft import ...` for every public name, without paying for torch/TRL
until a name that needs them is used."""

import subprocess
import sys
from importlib import resources

import pytest

PUBLIC = ["LARFTTrainer", "LARFTConfig", "length_reward", "LengthReward", "awareness_lambda", "count_words",
          "count_chars", "count_tokens", "length_score", "measure", "final_text", "run_eval", "EvalSettings", "best_of_n",
          "__version__"]


def test_every_public_name_imports_from_larft():
    import larft
    from larft.config import LARFTConfig
    from larft.eval.runner import EvalSettings, run_eval
    from larft.length import count_words
    from larft.trainer import LARFTTrainer

    assert sorted(larft.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        exec(f"from larft import {name}", {})  # the spelling users write
    assert larft.LARFTTrainer is LARFTTrainer and larft.LARFTConfig is LARFTConfig
    assert larft.run_eval is run_eval and larft.EvalSettings is EvalSettings and larft.count_words is count_words
    assert larft.count_words("Three short words") == 3
    assert larft.awareness_lambda(0, 10, 0.01) == 0.0
    assert isinstance(larft.__version__, str) and larft.__version__[0].isdigit()
    assert sorted(dir(larft)) == sorted(PUBLIC)


def test_an_unknown_name_is_an_attribute_error():
    import larft

    with pytest.raises(AttributeError, match="no attribute 'LarftTrainer'"):
        larft.LarftTrainer  # noqa: B018
    with pytest.raises(ImportError):
        exec("from larft import LarftTrainer", {})


@pytest.mark.subprocess
def test_import_larft_and_the_counters_do_not_load_torch_or_trl():
    code = ("import sys, larft; from larft import count_words, LengthReward, awareness_lambda; "
            "print(sorted(m for m in ('torch', 'trl', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    code = "import sys; from larft import LARFTConfig; print('trl' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "True"


def test_the_package_is_marked_typed():
    assert resources.files("larft").joinpath("py.typed").is_file()
