"""Trackers: one train-lm run with logging.trackers=[jsonl,tensorboard,wandb] (W&B offline) writes all
three, and the TensorBoard events read back give the losses of metrics.jsonl; a tracker asked for and
missing is a clear error. Needs the `tracking` extra (`pip install -e '.[tracking]'`)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from datarater.cli import SUBCOMMANDS, compose
from datarater.programs.train_lm import run as train_lm
from datarater.train.metrics import read_metrics


def tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """Every scalar of the event files under ``folder``: tag -> {step: value} (the last write wins,
    as TensorBoard shows it after a purge). Reads the TFRecord framing itself: length, CRC, event, CRC."""
    from tensorboardX.proto import event_pb2

    out: dict[str, dict[int, float]] = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (n,) = struct.unpack("<Q", data[at : at + 8])
            event = event_pb2.Event.FromString(data[at + 12 : at + 12 + n])
            at += 12 + n + 4
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    out.setdefault(v.tag, {})[event.step] = v.simple_value
    return out


@pytest.mark.slow  # in `make test-slow`, after .ci/run installs the extras
def test_one_run_writes_jsonl_tensorboard_and_wandb_with_the_same_losses(doc_corpus, tmp_path, monkeypatch):
    pytest.importorskip("tensorboardX", reason="the tracking extra: pip install -e '.[tracking]'")
    pytest.importorskip("wandb", reason="the tracking extra: pip install -e '.[tracking]'")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    args = ["model=nano", f"corpus.paths=[{doc_corpus}]", "data.seq_len=64", "train.batch_size=8", "train.steps=12",
            "train.log_every=4", "train.eval_every=6", "train.eval_batches=2", f"run_dir={run}",
            "logging.trackers=[jsonl,tensorboard,wandb]"]
    train_lm(compose(SUBCOMMANDS["train-lm"], args))
    rows = read_metrics(run / "metrics.jsonl")
    tb = tensorboard_scalars(run / "tensorboard")
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    assert sorted(losses) == list(range(1, 13))
    assert set(tb["loss"]) == set(losses)
    for step, loss in losses.items():  # TensorBoard keeps float32
        assert tb["loss"][step] == np.float32(loss), step
    assert {r["step"]: np.float32(r["val_nll"]) for r in rows if "val_nll" in r} == tb["val_nll"]
    assert set(tb["tokens_per_s"]) == {4, 8, 12}  # throughput rows go there too
    runs = list((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))  # the offline W&B run, to sync later
    assert (run / "wandb" / "run_id").read_text().strip() in runs[0].name


def test_a_tracker_asked_for_and_missing_is_named_with_its_install(doc_corpus, tmp_path, monkeypatch):
    import sys

    from datarater.errors import UserError

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed
    args = ["model=nano", f"corpus.paths=[{doc_corpus}]", "train.steps=2", f"run_dir={tmp_path / 'r'}",
            "logging.trackers=[tensorboard]"]
    with pytest.raises(UserError, match=r"logging.trackers.*tensorboard needs the 'tensorboardX' package: "
                                        r"pip install 'datarater\[tracking\]'"):
        train_lm(compose(SUBCOMMANDS["train-lm"], args))
