"""The `datarater` command: config validation before any compute, help, parameter counts."""

from __future__ import annotations

import pytest

from datarater.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_unknown_key_names_the_key_and_the_allowed_ones(capsys):
    code, _, err = run(capsys, "train-lm", "train.stepz=3", "corpus.paths=[x.jsonl]")
    assert code == 2
    assert "unknown config key 'train.stepz'" in err and "steps" in err and "Traceback" not in err


def test_a_reader_that_goes_away_stops_the_command_quietly(capsys, monkeypatch):
    """`datarater params | head`: stdout's pipe closed under a result: exit 141, no trace."""
    import io
    import sys

    class Closed(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    code = main(["params", "model=nano"])
    assert code == 141 and "Traceback" not in capsys.readouterr().err


def test_appended_unknown_key_is_refused_too(capsys):
    code, _, err = run(capsys, "params", "+model.widht=3")
    assert code == 2 and "model.widht" in err and "d_model" in err


def test_bad_type_names_the_key(capsys):
    code, _, err = run(capsys, "train-lm", "train.steps=many", "corpus.paths=[x.jsonl]")
    assert code == 2 and "train.steps" in err


@pytest.mark.parametrize(
    ("override", "key"),
    [("train.lr=-1", "train.lr"), ("data.tokenizer=words", "data.tokenizer"), ("mesh.tensor=0", "mesh.tensor"),
     ("corpus.heldout_fraction=0.7", "corpus.heldout_fraction"), ("model.d_head=15", "model.d_head"),
     ("train.microbatch_rows=-1", "train.microbatch_rows"), ("train.microbatch_rows=3", "train.microbatch_rows")],
)
def test_bad_values_stop_before_compute(capsys, override, key):
    code, _, err = run(capsys, "train-lm", override, "corpus.paths=[x.jsonl]", "corpus.validation_fraction=0.4")
    assert code == 2 and key in err


@pytest.mark.parametrize(
    ("override", "expected"),
    [("meta.microbatch_rows=3", "do not divide the 16 rows each device holds"),
     ("train.microbatch_rows=2", "set meta.microbatch_rows instead")],
)
def test_bad_microbatches_in_meta_train_are_named(capsys, override, expected):
    code, _, err = run(capsys, "meta-train", override, "corpus.paths=[x.jsonl]")
    assert code == 2 and override.split("=")[0] in err and expected in err


@pytest.mark.parametrize(
    ("override", "key"),
    [("sweep.compute.dtype=float16", "sweep.compute.dtype"), ("sweep.compute.attention_chunk=-1", "sweep.compute.attention_chunk"),
     ("sweep.larger=[nano,huge]", "sweep.larger"), ("sweep.compute.d_model=8", "sweep.compute.d_model"),
     ("sweep.select_on=source:", "sweep.select_on"), ("sweep.select_on=wiki", "sweep.select_on")],
)
def test_bad_sweep_models_are_named(capsys, override, key):
    code, _, err = run(capsys, "sweep", override, "corpus.paths=[x.jsonl]")
    assert code == 2 and f"'{key}'" in err and "Traceback" not in err


def test_unknown_group_option_lists_the_options(capsys):
    code, _, err = run(capsys, "params", "model=giant")
    assert code == 2 and "model/giant" in err and "chinchilla_1b" in err


def test_missing_corpus_file_is_named(capsys, tmp_path):
    missing = tmp_path / "nope.jsonl"
    code, _, err = run(capsys, "train-lm", f"corpus.paths=[{missing}]", f"run_dir={tmp_path / 'r'}")
    assert code == 2 and "nope.jsonl" in err and "Traceback" not in err


def test_help_lists_groups_options_and_keys(capsys):
    code, out, _ = run(capsys, "train-lm", "--help")
    assert code == 0
    for text in ("model ", "chinchilla_50m", "corpus ", "tfds", "mesh ", "fsdp", "batch_size:", "seq_len:"):
        assert text in out


def test_params_prints_counts_of_the_preset(capsys):
    from datarater.config.presets import load_preset
    from datarater.models.flops import lm_param_counts

    code, out, _ = run(capsys, "params", "model=chinchilla_400m")
    assert code == 0
    c = lm_param_counts(load_preset("chinchilla_400m"))
    assert f"{c.total:,}" in out and f"{c.non_embedding:,}" in out


def test_unknown_subcommand_and_bad_curation_settings(capsys):
    assert run(capsys, "trian")[0] == 2
    code, _, err = run(capsys, "score", "corpus.paths=[x.jsonl]")  # the datarater curator needs a rater
    assert code == 2 and "curate.rater_run" in err
    code, _, err = run(capsys, "train-lm", "corpus.paths=[x.jsonl]", "curate=random", "curate.discard=1.0")
    assert code == 2 and "curate.discard" in err and "[0, 1)" in err
    code, _, err = run(capsys, "sweep", "corpus.paths=[x.jsonl]", "sweep.ratios=[0,1.5]")
    assert code == 2 and "sweep.ratios[1]" in err
    code, _, err = run(capsys, "sweep", "corpus.paths=[x.jsonl]", "sweep.seeds=0")
    assert code == 2 and "sweep.seeds" in err
    # the quickstart's own budget keys are checked before any stage starts
    for override, key in (("quickstart.ratios=[0,1.5]", "quickstart.ratios[1]"), ("quickstart.curators=[best]", "quickstart.curators"),
                          ("quickstart.seeds=0", "quickstart.seeds"), ("quickstart.report_rows=-1", "quickstart.report_rows")):
        code, _, err = run(capsys, "quickstart", override)
        assert code == 2 and key in err, (override, err)


def test_every_key_listed_by_help_can_be_set(capsys):
    from datarater.cli import SUBCOMMANDS, compose

    prog = compose(SUBCOMMANDS["train-lm"], ["corpus.paths=[x.jsonl]", "model.remat=true", "model.dtype=bfloat16",
                                             "corpus.max_documents=7", "corpus.split_salt=s"])
    assert prog.model.remat and prog.model.dtype == "bfloat16"
    assert prog.corpus.max_documents == 7 and prog.corpus.split_salt == "s"


def test_bad_targets_are_refused_before_any_compute(capsys, doc_corpus, tmp_path):
    code, _, err = run(capsys, "meta-train", f"corpus.paths=[{doc_corpus}]", "meta.target.sources=[wikipedia]",
                       f"run_dir={tmp_path / 'm'}")
    assert code == 2 and "meta.target.sources" in err and "['wikipedia'] not in the corpus" in err and "more" in err
    assert not (tmp_path / "m" / "checkpoints").exists()
    code, _, err = run(capsys, "train-lm", f"corpus.paths=[{doc_corpus}]", f"target.paths=[{doc_corpus}]",
                       f"run_dir={tmp_path / 't'}")
    assert code == 2 and "'target'" in err and "overlaps the training corpus" in err
    code, _, err = run(capsys, "sweep", f"corpus.paths=[{doc_corpus}]", "sweep.curators=[dsir]", f"run_dir={tmp_path / 's'}")
    assert code == 2 and "sweep.curators" in err and "dsir models a target set" in err
    assert not (tmp_path / "s" / "lm").exists()
    code, _, err = run(capsys, "sweep", "corpus.paths=[x.jsonl]", "sweep.curators=[random]", "+sweep.raters.random=/r")
    assert code == 2 and "sweep.raters.random" in err
    code, _, err = run(capsys, "meta-train", "corpus.paths=[x.jsonl]", "meta.target.sources=[a]", "meta.target.paths=[b]")
    assert code == 2 and "meta.target" in err and "one or the other" in err
