"""An optional package asked for and missing, or an unknown tracker: one message naming the key and what to install or change."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from datarater.errors import UserError


def _wandb():
    from datarater.train.trackers import _need

    _need("wandb", "wandb")


def _safetensors():
    from datarater.programs.export import _save_tensors

    _save_tensors({"w": np.zeros(2, np.float32)}, "unused.safetensors")


def _tokenizer_export():
    from datarater.data.tokenizer_export import byte_tokenizer_json

    byte_tokenizer_json(add_bos=True)


def _hf_tokenizer():
    from datarater.data.tokenizer import HFTokenizer

    HFTokenizer("tokenizer.json")


@pytest.mark.parametrize("module,call,says", [
    ("wandb", _wandb, r"'logging\.trackers': wandb needs the 'wandb' package: pip install 'datarater\[tracking\]'"),
    ("safetensors", _safetensors, r"'format': hf needs the 'safetensors' package: pip install 'datarater\[hf\]'"),
    ("tokenizers", _tokenizer_export, r"'format': hf writes the byte tokenizer .*'tokenizers'.*datarater\[hf\]"),
    ("tokenizers", _hf_tokenizer, r"'data\.tokenizer': hf needs the 'tokenizers' package: pip install"),
])
def test_a_missing_optional_package_is_named_with_its_key_and_install(module, call, says, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # a call that wrongly succeeds writes here, not in the checkout
    # as if not installed: importing it, or any submodule an earlier test left cached, raises ImportError
    for name in [module] + [m for m in sys.modules if m.startswith(module + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(UserError, match=says):
        call()


def test_datarater_lm_eval_without_lm_eval_says_what_to_install(monkeypatch, capsys):
    from datarater.programs.lm_eval import main

    monkeypatch.setitem(sys.modules, "lm_eval", None)
    monkeypatch.setitem(sys.modules, "lm_eval.__main__", None)
    assert main(["--model", "datarater"]) == 2
    assert "lm-evaluation-harness is not installed: pip install 'datarater[interop]'" in capsys.readouterr().err


def test_an_unknown_tracker_is_refused_before_any_compute(tmp_path, capsys):
    from datarater.cli import main

    run = tmp_path / "r"
    assert main(["train-lm", "model=pico", "corpus.paths=[my.jsonl]", f"run_dir={run}",
                 "logging.trackers=[jsonl,tensorbored]"]) == 2
    err = capsys.readouterr().err
    assert "logging.trackers[1]" in err and "unknown tracker 'tensorbored'; choose from jsonl, tensorboard, wandb" in err
    assert not run.exists()
