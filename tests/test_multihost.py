"""Two processes on one machine, connected by JAX's multi-controller runtime over localhost (2 CPU
devices each, as two hosts of a slice would be): each process reads its own rows of the training
split, process 0 alone writes the run directory, and the checkpoint they save together resumes on
one process with 4 devices."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import device_env

from datarater.cli import SUBCOMMANDS, compose
from datarater.data.corpus import load_splits
from datarater.data.pipeline import make_iterator, restore_iterator, train_batches
from datarater.data.tokenizer import make_tokenizer
from datarater.parallel.mesh import make_mesh
from datarater.train.checkpoint import Checkpointer, abstract_like
from datarater.train.metrics import read_metrics
from datarater.train.optimizer import make_optimizer
from datarater.train.state import init_lm
from datarater.train.step import make_eval_step


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def train_lm_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "datarater.cli", "train-lm", *args]


def rows_with(run, key: str) -> list[dict]:
    return [r for r in read_metrics(run / "metrics.jsonl") if key in r]


def run_two_processes_until_killed(command: list[str], after_checkpoint: int) -> list[str]:
    """``command`` as two processes of one run (2 devices each), both SIGKILLed once the checkpoint
    of step ``after_checkpoint`` is on disk, as a preempted slice; their stderr."""
    port = free_port()
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(device_env(2), JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                                       JAX_PROCESS_ID=str(i), DATARATER_SIGKILL_AFTER_CHECKPOINT=str(after_checkpoint)))
             for i in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [-9, -9], "\n".join(err[-2000:] for err in errs)
    return errs


@pytest.mark.slow
def test_two_processes_read_their_own_rows_save_together_and_resume_on_one(doc_corpus, tmp_path):
    run = tmp_path / "run"
    args = [f"corpus.paths=[{doc_corpus}]", "model=nano", "data.seq_len=64", "train.batch_size=8", "train.steps=4",
            "train.checkpoint_every=2", "train.log_every=1", "train.eval_every=4", "train.eval_batches=1",
            "train.warmup_steps=0", f"run_dir={run}"]
    errs = run_two_processes_until_killed(train_lm_command(args), after_checkpoint=2)
    assert "mesh {'data': 4" in errs[0]  # one mesh over both processes' devices
    rows = rows_with(run, "loss")
    assert [r["step"] for r in rows] == [1, 2]  # written once, by process 0

    # Step 1's loss is the initial model's mean NLL on the union of the two processes' first batches
    # of 4 rows: process p draws from rows p::2 of the training split.
    prog = compose(SUBCOMMANDS["train-lm"], args)
    train = load_splits(prog.corpus, prog.data, make_tokenizer(prog.data), splits=("train",))["train"]
    first = [next(make_iterator(train_batches(train, 4, prog.train.seed, p, 2))) for p in range(2)]
    assert set(first[0]["index"] % 2) == {0} and set(first[1]["index"] % 2) == {1}
    union = {k: np.concatenate([b[k] for b in first]) for k in ("tokens", "segment_ids", "positions")}
    mesh = make_mesh(prog.mesh, jax.devices()[:1])
    state = init_lm(prog.model, prog.train.seed, mesh, prog.mesh.rules, make_optimizer(prog.train))
    nll, count = jax.jit(make_eval_step(state.graphdef))(state.params, union)
    np.testing.assert_allclose(rows[0]["loss"], float(nll / count), rtol=1e-5)
    # and each process alone would give another loss: the batch really is the union
    own = {k: v[:4] for k, v in union.items()}
    nll0, count0 = jax.jit(make_eval_step(state.graphdef))(state.params, own)
    assert abs(float(nll0 / count0) - rows[0]["loss"]) > 1e-4

    # The checkpoint both processes wrote resumes on one process with 4 devices: step 3's loss is
    # the saved parameters' on the batch one process reads at the saved data position.
    ckpt = Checkpointer(run / "checkpoints", keep=2)
    saved, extra = ckpt.restore(2, abstract_like({"params": state.params, "opt_state": state.opt_state}))
    ckpt.close()
    assert extra["processes"] == 2
    stream = make_iterator(train_batches(train, 8, prog.train.seed, 0, 1))
    restore_iterator(stream, extra["data"])
    third = {k: v for k, v in next(stream).items() if k != "index"}
    nll3, count3 = jax.jit(make_eval_step(state.graphdef))(saved["params"], third)
    r = subprocess.run(train_lm_command(args), env=device_env(4), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from step 2" in r.stderr and "saved by 2 process(es), resumed on 1" in r.stderr
    rows = rows_with(run, "loss")
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    np.testing.assert_allclose(rows[2]["loss"], float(nll3 / count3), rtol=1e-5)
    assert json.loads((run / "summary.json").read_text())["final_val_nll"] > 0


META = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.d_head=16", "model.d_ff=64",
        "rater.d_model=32", "rater.n_layers=1", "rater.n_heads=2", "rater.d_head=16", "rater.d_ff=64",
        "data.seq_len=32", "meta.inner_batch_size=4", "meta.outer_batch_size=4", "meta.population=4",
        "corpus.heldout_fraction=0.2", "meta.steps=4", "meta.log_every=1", "meta.checkpoint_every=2",
        "meta.lifetime=3", "meta.unroll=2"]


@pytest.mark.slow
def test_meta_training_on_two_processes_resumes_on_one_as_if_never_stopped(doc_corpus, tmp_path):
    """The population over data=4 spans both processes (a member per device); both read the same
    global batches, so their meta-steps, killed after step 2 and resumed on one process with 4
    devices, match an uninterrupted run on one process."""
    a = [f"corpus.paths=[{doc_corpus}]", *META]
    command = lambda run: [sys.executable, "-m", "datarater.cli", "meta-train", *a, f"run_dir={run}"]
    errs = run_two_processes_until_killed(command(tmp_path / "multi"), after_checkpoint=2)
    assert "population of 4 split over data; 1 member(s) per device" in errs[0]
    resumed = {}
    for run in ("multi", "single"):
        r = subprocess.run(command(tmp_path / run), env=device_env(4), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        resumed[run] = "resumed meta-training from step 2" in r.stderr
    assert resumed == {"multi": True, "single": False}
    keys = ("outer_loss", "inner_loss", "meta_grad_norm", "score_mean", "score_std")
    rows = {run: rows_with(tmp_path / run, "outer_loss") for run in ("multi", "single")}
    assert [r["step"] for r in rows["multi"]] == [r["step"] for r in rows["single"]] == [1, 2, 3, 4]
    for m, s in zip(rows["multi"], rows["single"], strict=True):
        np.testing.assert_allclose([m[k] for k in keys], [s[k] for k in keys], rtol=1e-5, atol=1e-9, err_msg=str(m["step"]))
    assert max(r["meta_grad_norm"] for r in rows["single"]) > 0
    assert (tmp_path / "multi" / "rater").is_dir()
