"""Run directories: a saved config that predates a key resumes, a changed key is refused, the same folder named another way resumes, a saved config is text."""

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


def test_the_same_directory_named_another_way_or_moved_resumes(tmp_path):
    saved_run(tmp_path, lambda cfg: None)
    other_name = TrainLMProgram(run_dir=f"{tmp_path}/./run/../run")  # was refused as "a different config"
    path, resuming = prepare_run_dir(other_name.run_dir, other_name)
    assert resuming and path == tmp_path / "run"
    assert yaml.safe_load((path / "config.yaml").read_text())["run_dir"] == str(tmp_path / "run")
    moved = tmp_path / "moved"
    (tmp_path / "run").rename(moved)
    assert prepare_run_dir(str(moved), TrainLMProgram(run_dir=str(moved)))[1]  # only run_dir differs: resumes


def test_a_saved_config_is_read_as_text_not_interpolated(tmp_path, monkeypatch):
    """A ``${oc.env:...}`` in a run directory's config.yaml is not looked up in this process's environment."""
    from datarater.artifacts import read_run_config

    prog = saved_run(tmp_path, lambda cfg: cfg["corpus"].update(text_field="${oc.env:DATARATER_TEST_SECRET}"))
    monkeypatch.setenv("DATARATER_TEST_SECRET", "looked-up")
    loaded = read_run_config(prog.run_dir, TrainLMProgram, "train-lm")
    assert loaded.corpus.text_field == "${oc.env:DATARATER_TEST_SECRET}"
    with pytest.raises(UserError, match=r"corpus.text_field: '\$\{oc.env:DATARATER_TEST_SECRET\}' -> 'text'"):
        prepare_run_dir(prog.run_dir, prog)  # compared as written, not as the environment says


def test_a_preset_name_cannot_name_a_path():
    from datarater.config.presets import load_preset

    for name in ("../../etc/passwd", "nano/../micro", "/tmp/x", ".hidden"):
        with pytest.raises(UserError, match="is not a preset name"):
            load_preset(name)
    assert load_preset("nano").name == "nano"
