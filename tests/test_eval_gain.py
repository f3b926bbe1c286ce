"""Net compute gain on synthetic curves with known answers, and reading a run's curve."""

from __future__ import annotations

import json
import math

import pytest
from omegaconf import OmegaConf

from datarater.config import DataConfig, ModelConfig, TrainConfig, TrainLMProgram
from datarater.errors import UserError
from datarater.eval.gain import flops_to_reach, net_compute_gain, read_curve
from datarater.models.flops import lm_flops_per_step


def loglinear_nll(flops: float) -> float:
    """NLL falling linearly in log-FLOPs: 10 - 0.25 ln(f); 12 at initialisation (f = 0)."""
    return 10.0 - 0.25 * math.log(flops) if flops > 0 else 12.0


def test_flops_to_reach_interpolates_between_the_bracketing_points():
    flops, nll = [0.0, 10.0, 20.0, 40.0], [5.0, 4.0, 3.0, 2.5]
    assert flops_to_reach(flops, nll, 3.5, "linear") == pytest.approx(15.0)
    assert flops_to_reach(flops, nll, 3.5, "log") == pytest.approx(math.sqrt(10.0 * 20.0))  # midway in log
    assert flops_to_reach(flops, nll, 4.5, "log") == pytest.approx(5.0)  # from 0 FLOPs: linear
    assert flops_to_reach(flops, nll, 3.0) == pytest.approx(20.0)  # exactly at a point
    assert flops_to_reach(flops, nll, 6.0) == 0.0  # already at the first point
    assert flops_to_reach(flops, nll, 2.0) is None  # never reached
    # the first crossing counts, not a later one after the curve goes up again
    assert flops_to_reach([1.0, 2.0, 3.0, 4.0], [4.0, 2.0, 5.0, 1.0], 3.0, "linear") == pytest.approx(1.5)
    assert flops_to_reach([1.0, 2.0], [float("nan"), 1.0], 3.0) == 2.0
    with pytest.raises(ValueError, match="non-decreasing"):
        flops_to_reach([2.0, 1.0], [3.0, 2.0], 2.5)


def curve(points: list[float], scale: float, curate_per_train: float = 0.0) -> list[tuple[float, float, float]]:
    """Evaluation points at training FLOPs ``points`` of a run as good as the baseline at ``scale`` x its FLOPs."""
    return [(f, curate_per_train * f, loglinear_nll(scale * f)) for f in points]


BASELINE = curve([1e8 * k for k in range(1, 11)], 1.0)  # final: 1e9 FLOPs


def test_half_the_flops_gives_half_minus_the_rater_cost():
    # The filtered run's NLL at f equals the baseline's at 2f: it reaches the baseline's final
    # NLL at 5e8 training FLOPs, evaluated at points that do not include 5e8.
    points = [0.0] + [3.7e7 * k for k in range(1, 25)]
    assert net_compute_gain(BASELINE, curve(points, 2.0)) == pytest.approx(0.5, rel=1e-9)
    # rater inference recorded in the curve: 10% of the training FLOPs -> 1 - 0.5 * 1.1
    assert net_compute_gain(BASELINE, curve(points, 2.0, 0.1)) == pytest.approx(0.45, rel=1e-9)
    # or given separately, as FLOPs per training FLOP or as a function of training FLOPs
    assert net_compute_gain(BASELINE, curve(points, 2.0), 0.1) == pytest.approx(0.45, rel=1e-9)
    assert net_compute_gain(BASELINE, curve(points, 2.0), lambda f: 0.1 * f) == pytest.approx(0.45, rel=1e-9)
    # linear interpolation is not exact on this curve, but close between dense points
    assert net_compute_gain(BASELINE, curve(points, 2.0), interpolation="linear") == pytest.approx(0.5, abs=0.01)


def test_a_worse_run_has_negative_gain_and_a_run_that_never_gets_there_none():
    points = [1e8 * k for k in range(1, 31)]
    assert net_compute_gain(BASELINE, curve(points, 0.5)) == pytest.approx(-1.0, rel=1e-9)  # needs 2e9
    assert net_compute_gain(BASELINE, curve(points[:10], 0.5)) is None  # stopped at 1e9: not reached
    assert net_compute_gain(BASELINE, BASELINE) == pytest.approx(0.0, abs=1e-12)


def write_run(run_dir, rows: list, program: TrainLMProgram) -> None:
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(program)))
    (run_dir / "metrics.jsonl").write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_read_curve_from_metrics_rows(tmp_path):
    program = TrainLMProgram(model=ModelConfig(), data=DataConfig(seq_len=32), train=TrainConfig(batch_size=4))
    per_step = lm_flops_per_step(program.model, 4, 32)
    rows = [
        {"step": 0, "val_nll": 5.5},
        {"step": 1, "loss": 5.4},
        {"step": 10, "val_nll": 4.0, "curate_flops": 7.0},
        {"step": 20, "val_nll": 9.9},
        '{"step": 25, "val_nl',  # cut short by a kill
        {"step": 20, "val_nll": 3.0},  # recomputed after a resume: the last row wins
    ]
    write_run(tmp_path / "a", rows, program)
    assert read_curve(tmp_path / "a") == [(0.0, 0.0, 5.5), (10 * per_step, 7.0, 4.0), (20 * per_step, 0.0, 3.0)]
    assert read_curve(tmp_path / "a", with_step=True)[1] == (10, 10 * per_step, 7.0, 4.0)
    # recorded FLOPs are used as they are
    write_run(tmp_path / "b", [{"step": 5, "val_nll": 4.0, "train_flops": 123.0, "curate_flops": 4.0}], program)
    assert read_curve(tmp_path / "b") == [(123.0, 4.0, 4.0)]
    write_run(tmp_path / "c", [{"step": 1, "loss": 5.0}], program)
    with pytest.raises(UserError, match="no evaluation rows"):
        read_curve(tmp_path / "c")
    with pytest.raises(UserError, match="no metrics.jsonl"):
        read_curve(tmp_path / "missing")
