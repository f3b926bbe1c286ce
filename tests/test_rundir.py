"""Run directories: a saved config that predates a key resumes; a changed key is refused."""

from __future__ import annotations

import pytest
import yaml

from datarater.config import TrainLMProgram
from datarater.errors import UserError
from datarater.rundir import prepare_run_dir


def saved_run(tmp_path, edit) -> TrainLMProgram:
    prog = TrainLMProgram(run_dir=str(tmp_path / "run"))
    path, resuming = prepare_run_dir(prog.run_dir, prog)
    assert not resuming
    (path / "checkpoints" / "10").mkdir(parents=True)
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    edit(cfg)
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    return prog


def test_a_key_added_since_the_run_counts_as_its_default(tmp_path):
    prog = saved_run(tmp_path, lambda cfg: cfg["model"].pop("attention_chunk"))
    assert prepare_run_dir(prog.run_dir, prog)[1]  # resumes


def test_a_changed_key_is_refused_with_its_name(tmp_path):
    prog = saved_run(tmp_path, lambda cfg: cfg["model"].update(attention_chunk=64))
    with pytest.raises(UserError, match=r"model.attention_chunk: 64 -> 0"):
        prepare_run_dir(prog.run_dir, prog)
