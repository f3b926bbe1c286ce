"""The one training loop: hook periods and order, checkpoint cadence, Ctrl-C at a step boundary, restore."""

from __future__ import annotations

import json
import os
import signal

import pytest

from datarater.train.loop import Loop
from datarater.train.metrics import MetricsFile


class FakeCheckpointer:
    def __init__(self, latest=None, saved_state=None):
        self.saves: list[tuple[int, dict, dict]] = []
        self.latest, self.saved_state, self.closed = latest, saved_state, False

    def latest_step(self):
        return self.latest

    def save(self, step, arrays, extra):
        self.saves.append((step, arrays, extra))

    def restore(self, step, abstract):
        return self.saved_state, {"data": "it", "step": step}

    warnings: list = []

    def restore_latest(self, abstract):
        return None if self.latest is None else (self.latest, *self.restore(self.latest, abstract))

    def check(self):
        pass

    def wait(self):
        pass

    def close(self):
        self.closed = True


def make_loop(tmp_path, total=10, every=5, ckpt=None):
    ckpt = ckpt or FakeCheckpointer()
    state = {"x": 0}
    loop = Loop(ckpt, MetricsFile(tmp_path / "metrics.jsonl"), total, every,
                snapshot=lambda step: ({"x": state["x"]}, {"data": f"pos{step}"}))
    return loop, ckpt, state


def test_hooks_in_order_at_their_periods_and_checkpoints_at_the_cadence(tmp_path):
    loop, ckpt, state = make_loop(tmp_path, total=7, every=3)
    calls = []
    loop.add_hook(lambda s, out: calls.append(("a", s, out)), every=2)
    loop.add_hook(lambda s, out: calls.append(("b", s, out)), every=3, at_last=False)

    def step(s):
        state["x"] = s
        return s * 10

    assert loop.run(0, step) == 7
    assert calls == [("a", 2, 20), ("b", 3, 30), ("a", 4, 40), ("a", 6, 60), ("b", 6, 60), ("a", 7, 70)]
    assert [(s, a["x"], e) for s, a, e in ckpt.saves] == [
        (3, 3, {"data": "pos3", "step": 3}), (6, 6, {"data": "pos6", "step": 6}), (7, 7, {"data": "pos7", "step": 7})]
    assert ckpt.closed


def test_resumed_run_starts_after_the_restored_step(tmp_path):
    loop, ckpt, state = make_loop(tmp_path, total=6, every=2)
    taken = []
    loop.run(4, lambda s: taken.append(s))
    assert taken == [5, 6] and [s for s, _, _ in ckpt.saves] == [6]


@pytest.fixture
def sigint_as_in_a_terminal():
    """The Ctrl-C tests run as from a terminal whatever SIGINT this process inherited (a script's
    background job starts with it ignored)."""
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, inherited)


@pytest.mark.usefixtures("sigint_as_in_a_terminal")
def test_ctrl_c_finishes_the_step_and_its_hooks_then_saves_it(tmp_path):
    loop, ckpt, state = make_loop(tmp_path, total=10, every=5)
    hooked = []
    loop.add_hook(lambda s, out: hooked.append(s))

    def step(s):
        state["x"] = s
        if s == 3:
            os.kill(os.getpid(), signal.SIGINT)  # arrives while the step is under way
            state["x"] = s  # the step still completes
        return s

    with pytest.raises(KeyboardInterrupt):
        loop.run(0, step)
    assert loop.interrupted_at == 3 and hooked == [1, 2, 3]
    assert [(s, a["x"]) for s, a, _ in ckpt.saves] == [(3, 3)]  # the state of the step it says
    assert ckpt.closed
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler put back


@pytest.mark.usefixtures("sigint_as_in_a_terminal")
def test_a_second_ctrl_c_stops_at_once_without_a_new_checkpoint(tmp_path):
    loop, ckpt, _ = make_loop(tmp_path, total=10, every=2)

    def step(s):
        if s == 3:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # raises here, in the middle of step 3
        return s

    with pytest.raises(KeyboardInterrupt):
        loop.run(0, step)
    assert loop.interrupted_at is None and loop.step == 2
    assert [s for s, _, _ in ckpt.saves] == [2] and ckpt.closed


@pytest.mark.parametrize("twice", [False, True])
def test_a_run_that_inherited_sigint_ignored_stops_as_from_a_terminal(tmp_path, twice):
    """A script's background job starts with SIGINT ignored: a first SIGINT still stops at the step's
    end with a checkpoint, a second at once (it was ignored), and "ignored" is put back after."""
    inherited = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        loop, ckpt, _ = make_loop(tmp_path, total=10, every=2)

        def step(s):
            if s == 3:
                for _ in range(1 + twice):
                    os.kill(os.getpid(), signal.SIGINT)
            return s

        with pytest.raises(KeyboardInterrupt):
            loop.run(0, step)
        assert loop.interrupted_at == (None if twice else 3)
        assert [s for s, _, _ in ckpt.saves] == ([2] if twice else [2, 3])
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_restore_drops_metric_rows_after_the_checkpoint(tmp_path):
    rows = [{"step": s, "loss": float(s)} for s in range(1, 7)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 7, "lo')
    loop, _, _ = make_loop(tmp_path, ckpt=FakeCheckpointer(latest=4, saved_state={"x": 4}))
    restored = loop.restore(abstract_state=None)
    assert restored.found and restored.step == 4 and restored.state == {"x": 4} and restored.extra["data"] == "it"
    assert restored.dropped_rows == 3  # steps 5, 6 and the line cut short
    kept = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert kept == [1, 2, 3, 4]


def test_restore_without_a_checkpoint_starts_the_metrics_afresh(tmp_path):
    """Rows of an attempt killed before its first checkpoint was on disk are not kept: the run
    starts again at step 0 and would write them twice (they were, before)."""
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    loop, _, _ = make_loop(tmp_path)
    restored = loop.restore(abstract_state=None)
    assert not restored.found and restored.step == 0
    assert not (tmp_path / "metrics.jsonl").exists()
