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


@pytest.mark.slow  # needs the tracking extra, like the test above
def test_a_reports_plots_and_table_reach_tensorboard_and_wandb(tmp_path, monkeypatch):
    pytest.importorskip("tensorboardX", reason="the tracking extra: pip install -e '.[tracking]'")
    pytest.importorskip("wandb", reason="the tracking extra: pip install -e '.[tracking]'")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from tensorboardX.proto import event_pb2

    from datarater.config.groups import LoggingConfig
    from datarater.train.trackers import Trackers

    monkeypatch.setenv("WANDB_SILENT", "true")
    fig = plt.figure(figsize=(2, 1.5), dpi=50)
    fig.savefig(tmp_path / "curve.png")
    plt.close(fig)
    rows = [{"name": "nano-random-0.5", "final_val_nll": "2.71"}, {"name": "nano-datarater-0.5", "final_val_nll": "2.66"}]
    t = Trackers(tmp_path, LoggingConfig(trackers=["jsonl", "tensorboard", "wandb"]), {"a": 1}, "report")
    t.log_report({"curve": tmp_path / "curve.png"}, {"results": rows}, step=0)
    t.close()
    images, texts = {}, {}
    for path in (tmp_path / "tensorboard").rglob("events.out.tfevents.*"):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (n,) = struct.unpack("<Q", data[at : at + 8])
            for v in event_pb2.Event.FromString(data[at + 12 : at + 12 + n]).summary.value:
                if v.HasField("image"):
                    images[v.tag] = (v.image.height, v.image.width)
                elif v.metadata.plugin_data.plugin_name == "text":
                    texts[v.tag] = v.tensor.string_val[0].decode()
            at += 12 + n + 4
    assert images == {"report/curve": (75, 100)}  # 1.5 x 2 inches at 50 dpi
    assert "nano-datarater-0.5 | 2.66" in texts["report/results/text_summary"]
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list(run.rglob("media/images/report/curve_*.png")) and list(run.rglob("media/table/report/results_*.json"))
    assert not (tmp_path / "metrics.jsonl").exists()  # the report's rows stay in its own files
