"""`sweep.select_seeds`: the best ratio picked on the mean over several seeds of the grid, the replicas after them."""

from __future__ import annotations

import json

import pytest

from datarater.cli import SUBCOMMANDS, compose
from datarater.errors import UserError

ARGS = ["corpus.paths=[x.jsonl]", "sweep.curators=[random]", "sweep.ratios=[0,0.25,0.5]", "sweep.seeds=2"]

# final NLL per (point, seed): seed 0 alone would pick 50% (a lucky run), the mean over seeds 0-2 picks 25%
NLL = {("none", 0.0): [2.70, 2.72, 2.71], ("random", 0.25): [2.66, 2.64, 2.65], ("random", 0.5): [2.60, 2.75, 2.74]}


def _finish(run_dir, nll: float) -> None:
    from pathlib import Path

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "summary.json").write_text(json.dumps({"final_nll_sets": {"validation": nll}}))


def _grid(tmp_path, k: int, *more: str):
    from datarater.programs.sweep_plan import plan_picking, plan_stage1

    prog = compose(SUBCOMMANDS["sweep"], [*ARGS, f"sweep.select_seeds={k}", f"run_dir={tmp_path}", *more])
    return prog, plan_stage1(prog), plan_picking(prog)


def test_the_mean_over_picking_seeds_picks_the_ratio_and_the_replicas_come_after_them(tmp_path):
    from datarater.programs.report import picked_best
    from datarater.programs.sweep_plan import best_ratio_per_curator, lms_left, replica_seeds

    prog, stage1, picking = _grid(tmp_path, 3)
    # the whole grid again with seeds +1 and +2, init, data order and the curator's draws alike
    assert sorted((r.curator, r.discard, r.program.train.seed - prog.train.seed) for r in picking) == sorted(
        (c, rho, i) for c, rho in NLL for i in (1, 2))
    assert all(r.program.curate.seed - prog.curate.seed == r.program.train.seed - prog.train.seed for r in picking)
    assert list(replica_seeds(prog)) == [3, 4]  # never a picking seed
    assert lms_left(prog) == (9 + 2 * 2, 9 + 2 * 2)  # 9 picking runs, then at most 2 points x 2 replicas
    for r in stage1 + picking:
        _finish(r.program.run_dir, NLL[(r.curator, r.discard)][r.program.train.seed - prog.train.seed])
    assert best_ratio_per_curator(prog, stage1) == {"random": 0.5}  # the first seed alone
    assert best_ratio_per_curator(prog, stage1 + picking) == {"random": 0.25}  # the mean
    assert lms_left(prog) == (4, 13)  # exact now: unfiltered and random at 25%, 2 replicas each
    # `datarater report`: the ratios the sweep picked, once it has (for the curators with a run there)
    assert picked_best(tmp_path, 3, ["random"]) is None  # not picked yet: the report picks from the first seed
    (tmp_path / "best_ratios.json").write_text(json.dumps({"random": 0.25, "dsir": 0.5}))
    assert picked_best(tmp_path, 3, ["none", "random"]) == {"random": 0.25}
    assert picked_best(tmp_path, 1, ["random"]) is None  # one seed: the report picks from the runs
    # its baseline spread: the replicas after the picking seeds, never a picking seed's run
    from datarater.programs.report import finished_runs
    from datarater.rundir import prepare_run_dir

    for r in stage1:  # the first seed's runs, as train-lm writes their configs
        prepare_run_dir(r.program.run_dir, r.program)
    for i, nll in [(3, 2.69), (4, 2.73)]:
        _finish(tmp_path / "lm" / f"nano-none-0-seed{i}", nll)
    assert finished_runs(tmp_path, "validation", True, 2, 3)[1] == {"nano": [2.69, 2.73]}
    assert finished_runs(tmp_path, "validation", True, 2)[1] == {"nano": [2.72, 2.71]}  # what one picking seed would test


def test_with_one_seed_the_picking_seeds_still_pick_and_nothing_is_tested(tmp_path):
    """sweep.seeds=1 beside sweep.select_seeds=3: the grid runs on 3 seeds and their mean picks the
    ratio, as with replicas, but there are none (one seed gives no test)."""
    from datarater.programs.sweep_plan import best_ratio_per_curator, lms_left, replica_seeds

    prog, stage1, picking = _grid(tmp_path, 3, "sweep.seeds=1")
    assert len(picking) == 2 * len(stage1) and list(replica_seeds(prog)) == []
    for r in stage1 + picking:
        _finish(r.program.run_dir, NLL[(r.curator, r.discard)][r.program.train.seed - prog.train.seed])
    assert best_ratio_per_curator(prog, stage1 + picking) == {"random": 0.25}  # the mean, not seed 0's 50%
    assert lms_left(prog) == (0, 9)  # nothing left to train: no replica follows


def test_picking_seeds_need_the_replicas_apart_and_at_least_one():
    """Refused when the config is composed, before any LM trains."""
    with pytest.raises(UserError, match=r"'sweep.select_seeds': 2 picking seeds need sweep.select_apart=true"):
        compose(SUBCOMMANDS["sweep"], [*ARGS, "sweep.select_seeds=2", "sweep.select_apart=false"])
    with pytest.raises(UserError, match=r"'sweep.select_seeds': must be >= 1"):
        compose(SUBCOMMANDS["sweep"], [*ARGS, "sweep.select_seeds=0"])


@pytest.mark.slow
def test_a_sweep_picks_on_the_mean_of_its_picking_seeds_and_tests_the_seeds_after_them(doc_corpus, tmp_path):
    """End to end, with LMs of 6 steps: 2 seeds of the grid pick the ratio on their mean final NLL,
    and the 2 replicas tested are seeds +2 and +3."""
    from datarater.programs.report import picked_best
    from datarater.programs.sweep import run as sweep
    from datarater.programs.sweep_runs import final_nll

    args = [f"corpus.paths=[{doc_corpus}]", "data.seq_len=64", "train.batch_size=8", "train.steps=6",
            "train.eval_every=3", "train.eval_batches=2", "train.log_every=3", "train.checkpoint_every=6",
            "sweep.ratios=[0,0.5]", "sweep.curators=[random]", "sweep.seeds=2", "sweep.select_seeds=2",
            f"run_dir={tmp_path}"]
    out = sweep(compose(SUBCOMMANDS["sweep"], args))
    lm = tmp_path / "lm"

    def mean(name: str) -> float:
        return (final_nll(str(lm / name)) + final_nll(str(lm / f"{name}-seed1"))) / 2

    assert out["best"] == {"random": 0.5 if mean("nano-random-0.5") < mean("nano-none-0") else 0.0}
    assert picked_best(tmp_path, 2, ["random"]) == out["best"]  # what `datarater report` shows
    rho = out["best"]["random"]
    points = ["nano-none-0"] + ([f"nano-random-{rho:g}"] if rho > 0 else [])
    assert {d.name for d in lm.iterdir()} == {f"{p}{s}" for p in ["nano-none-0", "nano-random-0.5"] for s in ("", "-seed1")} | {
        f"{p}-seed{i}" for p in points for i in (2, 3)}
    row = out["comparison"][0]
    replicas = [final_nll(str(lm / f"nano-none-0-seed{i}")) for i in (2, 3)]
    assert row["unfiltered"]["mean"] == pytest.approx(sum(replicas) / 2)  # the picking seeds are not tested
    assert out["baseline_spread"] == {"nano": replicas}
    written = json.loads((tmp_path / "comparison.json").read_text())
    assert (written["select_apart"], written["seeds"], written["select_seeds"]) == (True, 2, 2)
    md = (tmp_path / "results.md").read_text()
    assert f"| random | 0.5 | {mean('nano-random-0.5'):.4f} |" in md and f"| none | 0 | {mean('nano-none-0'):.4f} |" in md
