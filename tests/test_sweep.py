"""`datarater sweep`: best ratio by held-out NLL, finished runs reused, results with net gain."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest

from datarater.cli import SUBCOMMANDS, compose
from datarater.errors import UserError
from datarater.programs.report import finished_runs
from datarater.programs.sweep import run as sweep
from datarater.programs.sweep_runs import PlannedRun, final_nll, run_results
from datarater.train.load import read_program


def test_sweep_picks_best_ratio_and_reuses_finished_runs(doc_corpus, tmp_path):
    args = [f"corpus.paths=[{doc_corpus}]", "data.seq_len=64", "train.batch_size=8", "train.steps=6",
            "train.eval_every=3", "train.eval_batches=2", "train.log_every=3", "train.checkpoint_every=6",
            "sweep.ratios=[0,0.5]", "sweep.curators=[random]", "sweep.seeds=2", f"run_dir={tmp_path / 'sw'}"]
    prog = compose(SUBCOMMANDS["sweep"], args)
    out = sweep(prog)
    nll = out["final_val_nll"]
    assert set(nll) == {"nano-none-0", "nano-random-0.5"}  # the seed replica is not a sweep point
    # the replica: the unfiltered run again with the next seed, a different run of the same config
    replica = tmp_path / "sw" / "lm" / "nano-none-0-seed1"
    assert read_program(replica).train.seed == prog.train.seed + 1
    # the test over seeds leaves out the runs that picked the ratio (sweep.select_apart): 2 replicas
    replicas = [final_nll(str(tmp_path / "sw" / "lm" / f"nano-none-0-seed{i}")) for i in (1, 2)]
    assert out["baseline_spread"] == {"nano": replicas}
    assert final_nll(str(replica)) != nll["nano-none-0"]
    assert finished_runs(tmp_path / "sw", apart=True)[1] == out["baseline_spread"]  # what `datarater report` reads back
    assert finished_runs(tmp_path / "sw")[1] == {"nano": [nll["nano-none-0"], *replicas]}
    # under the other protocol (2 seeds beside the picking run) the second replica is not in its test
    assert finished_runs(tmp_path / "sw", seeds=2)[1] == {"nano": [nll["nano-none-0"], replicas[0]]}
    assert finished_runs(tmp_path / "sw", apart=True, seeds=1)[1] == {"nano": replicas[:1]}  # apart: 1 .. seeds
    written = json.loads((tmp_path / "sw" / "comparison.json").read_text())
    assert (written["select_apart"], written["seeds"]) == (True, 2)
    assert out["best"]["random"] == (0.5 if nll["nano-random-0.5"] < nll["nano-none-0"] else 0.0)
    # over seeds: random at its best ratio is trained again with the next seeds, and compared
    row = out["comparison"][0]
    rho = out["best"]["random"]
    if rho > 0:
        again = [tmp_path / "sw" / "lm" / f"nano-random-0.5-seed{i}" for i in (1, 2)]
        assert [read_program(d).train.seed for d in again] == [prog.train.seed + 1, prog.train.seed + 2]
        assert read_program(again[0]).curate.seed == prog.curate.seed + 1  # random's salt drawn again
        runs = [final_nll(str(d)) for d in again]
        # its net compute gain: of its first replica against the unfiltered replica of that seed
        pair = [PlannedRun(d.name, "nano", c, x, read_program(d)) for d, c, x in ((replica, "none", 0.0), (again[0], "random", 0.5))]
        assert row["gain"] == pytest.approx(run_results(pair)[1][again[0].name])
    else:
        runs = replicas
    assert row["curator"] == "random" and row["nll"]["n"] == 2
    assert row["nll"]["mean"] == pytest.approx(sum(runs) / 2)
    assert row["unfiltered"]["mean"] == pytest.approx(sum(replicas) / 2)  # not the picking run's NLL
    assert out["select_on"] == "validation"  # no target: the corpus's own validation split
    summaries = sorted((tmp_path / "sw" / "lm").glob("*/summary.json"))
    stamps = [p.stat().st_mtime_ns for p in summaries]
    again = sweep(compose(SUBCOMMANDS["sweep"], args))
    assert again["final_val_nll"] == nll
    assert [p.stat().st_mtime_ns for p in summaries] == stamps  # nothing retrained
    assert json.loads((tmp_path / "sw" / "comparison.previous.json").read_text()) == written  # set aside, then again
    assert json.loads((tmp_path / "sw" / "comparison.json").read_text()) == written
    # finished float32 runs are not reused for a bf16 sweep: it stops before training anything
    with pytest.raises(UserError, match=r"model.dtype: 'float32' -> 'bfloat16'"):
        sweep(compose(SUBCOMMANDS["sweep"], [*args, "sweep.compute.dtype=bfloat16"]))
    assert [p.stat().st_mtime_ns for p in summaries] == stamps
    rows = list(csv.DictReader((tmp_path / "sw" / "results.csv").open()))
    assert {r["name"] for r in rows} == set(nll)
    assert (tmp_path / "sw" / "results.md").read_text().count("| nano-") == 2
    assert "Run-to-run noise: the unfiltered nano LM trained with 2 seeds" in (tmp_path / "sw" / "results.md").read_text()


def test_sweep_compute_settings_reach_every_model_and_leave_shapes_alone():
    from datarater.config.presets import load_preset
    from datarater.programs.sweep_plan import lm_program

    args = ["corpus.paths=[x.jsonl]", "sweep.larger=[micro]", "sweep.compute.dtype=bfloat16",
            "sweep.compute.attention_chunk=32"]
    prog = compose(SUBCOMMANDS["sweep"], args)
    for preset, curator, rho in [("nano", "none", 0.0), ("nano", "random", 0.5), ("micro", "datarater", 0.25)]:
        model = lm_program(prog, preset, curator, rho).model
        expected = load_preset(preset)
        assert (model.dtype, model.attention_chunk) == ("bfloat16", 32)
        # the rest is the preset's own: shape, param dtype, remat, causal blocks
        assert (model.d_model, model.n_layers, model.param_dtype, model.remat, model.causal_blocks) == (
            expected.d_model, expected.n_layers, expected.param_dtype, expected.remat, expected.causal_blocks)
    plain = lm_program(compose(SUBCOMMANDS["sweep"], args[:2]), "micro", "none", 0.0).model
    assert plain == load_preset("micro")


def test_quickstart_sweep_trains_the_quickstart_model_settings(tmp_path):
    """`quickstart model.dtype=bfloat16 ...`: the sweep stage's LMs compute as the meta-trained ones."""
    from datarater.programs.quickstart import sweep_program
    from datarater.programs.sweep_plan import lm_program

    prog = compose(SUBCOMMANDS["quickstart"], ["model.dtype=bfloat16", "model.attention_chunk=16", "model.remat=true"])
    sweep_prog = sweep_program(prog, tmp_path)
    for curator, rho in [("none", 0.0), ("random", 0.5)]:
        assert lm_program(sweep_prog, sweep_prog.sweep.model, curator, rho).model == prog.model


def test_sweep_selects_on_the_target_and_names_extra_raters(tmp_path):
    """Without training: the best ratio is chosen on the target's set when there is one (given, or
    the rater's meta.target), and a rater of sweep.raters runs as a datarater under its own name."""
    import yaml

    from datarater.programs.sweep_plan import lm_program, resolve_target, select_set

    prog = compose(SUBCOMMANDS["sweep"], ["corpus.paths=[x.jsonl]", f"run_dir={tmp_path / 'sw'}",
                                          "sweep.curators=[datarater,other]", "+sweep.raters.other=/r/other",
                                          "+sweep.rater_scores.other=/s/other"])
    assert select_set(prog) == "validation"
    meta = tmp_path / "meta"
    meta.mkdir()
    (meta / "config.yaml").write_text(yaml.safe_dump({"meta": {"target": {"labels": ["clean"]}}}))
    prog.curate.rater_run = str(meta)
    resolve_target(prog)
    assert prog.target.labels == ["clean"] and select_set(prog) == "target"
    assert lm_program(prog, "nano", "none", 0.0).eval.curve_sets == []  # the target's curve is always there
    prog.sweep.select_on = "label:clean"
    assert select_set(prog) == "label:clean"
    other = lm_program(prog, "nano", "other", 0.5)
    assert other.eval.curve_sets == ["label:clean"] and prog.eval.curve_sets == []  # its curve: the gain on it
    assert (other.curate.name, other.curate.rater_run, other.curate.scores) == ("datarater", "/r/other", "/s/other")
    assert other.run_dir.endswith("lm/nano-other-0.5") and other.target.labels == ["clean"]
    assert lm_program(prog, "nano", "other", 0.0).curate.name == "none"
    with pytest.raises(UserError, match="sweep.curators.*unknown curator 'nope'"):
        compose(SUBCOMMANDS["sweep"], ["corpus.paths=[x.jsonl]", "sweep.curators=[nope]"])


def test_net_compute_gain_is_read_on_the_set_that_picks_the_ratio(tmp_path):
    """With sweep.select_on=source:wiki the gain comes from the runs' curves on that source (metric
    nll/source:wiki), not from the corpus's validation curve; a run without that curve gets none."""
    from datarater.programs.sweep_plan import lm_program

    prog = compose(SUBCOMMANDS["sweep"], ["corpus.paths=[x.jsonl]", f"run_dir={tmp_path / 'sw'}",
                                          "sweep.select_on=source:wiki"])
    flops = [0.0, 100.0, 200.0]
    curves = {"none": ([5, 4, 3], [5, 4, 3]), "random": ([5, 3, 2.5], [5, 4, 3])}  # (source:wiki, validation)
    runs = []
    for curator, (wiki, val) in curves.items():
        p = lm_program(prog, "nano", curator, 0.5 if curator != "none" else 0.0)
        Path(p.run_dir).mkdir(parents=True)
        rows = [{"step": i, "train_flops": f, "curate_flops": 0.0, "val_nll": v, "nll/source:wiki": w}
                for i, (f, w, v) in enumerate(zip(flops, wiki, val, strict=True))]
        (Path(p.run_dir) / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (Path(p.run_dir) / "summary.json").write_text(json.dumps({"steps": 2, "train_flops": 200.0, "final_nll_sets": {
            "validation": val[-1], "source:wiki": wiki[-1]}}))
        runs.append(PlannedRun(Path(p.run_dir).name, "nano", curator, p.curate.discard, p))
    results, gains = run_results(runs, "source:wiki")
    assert gains == {"nano-random-0.5": pytest.approx(0.5)}  # reaches 3 nats on wiki at 100 of 200 FLOPs
    assert [r.final_val_nll for r in results] == [3, 2.5]
    assert run_results(runs, "validation")[1] == {"nano-random-0.5": pytest.approx(0.0)}
    web, gains = run_results(runs, "source:web")
    assert gains == {}  # no curve on it: no gain, rather than another set's
    assert [r.flops_per_step for r in web] == [r.flops_per_step for r in results] == [100.0, 100.0]
    # a replica's gain is against the unfiltered replica of its own seed (here 2.5 nats at the end,
    # which random's replica reaches only at its end: 0), not against the first seed's (3 nats: 0.5)
    seeded = []
    for r, wiki in zip(runs, ([5, 4, 2.5], [5, 3, 2.5]), strict=True):
        d = Path(r.program.run_dir + "-seed1")
        d.mkdir()
        rows = [{"step": i, "train_flops": f, "curate_flops": 0.0, "nll/source:wiki": w}
                for i, (f, w) in enumerate(zip(flops, wiki, strict=True))]
        (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
        program = copy.deepcopy(r.program)
        program.run_dir = str(d)
        seeded.append(PlannedRun(d.name, "nano", r.curator, r.discard, program))
    assert run_results(seeded, "source:wiki")[1] == {"nano-random-0.5-seed1": pytest.approx(0.0)}


def test_an_lm_started_by_an_earlier_sweep_resumes_as_started(tmp_path, capsys):
    """A sweep LM checkpointed before the sweep asked for a curve on sweep.select_on, and a replica
    checkpointed before replicas drew curate.seed again, keep their own eval.curve_sets and
    curate.seed (a run's config may not change mid-run) rather than being refused."""
    from datarater.programs.sweep import keep_started_config
    from datarater.programs.sweep_plan import lm_program, plan_seed_runs
    from datarater.programs.sweep_runs import PlannedRun
    from datarater.rundir import has_checkpoint, prepare_run_dir

    prog = compose(SUBCOMMANDS["sweep"], ["corpus.paths=[x.jsonl]", f"run_dir={tmp_path / 'sw'}",
                                          "sweep.select_on=source:wiki"])
    old = lm_program(prog, "nano", "random", 0.5)
    old.eval.curve_sets = []
    prepare_run_dir(old.run_dir, old)  # what an earlier version wrote
    (Path(old.run_dir) / "checkpoints" / "10").mkdir(parents=True)
    r = PlannedRun("nano-random-0.5", "nano", "random", 0.5, lm_program(prog, "nano", "random", 0.5))
    assert r.program.eval.curve_sets == ["source:wiki"] and has_checkpoint(Path(old.run_dir))
    with pytest.raises(UserError, match=r"eval.curve_sets: \[\] -> \['source:wiki'\]"):
        prepare_run_dir(r.program.run_dir, r.program, write=False)
    keep_started_config(r)
    assert r.program.eval.curve_sets == []
    prepare_run_dir(r.program.run_dir, r.program)  # so train-lm resumes it instead of refusing
    prog.sweep.seeds = 2
    replica = next(x for x in plan_seed_runs(prog, {"random": 0.5}) if x.curator == "random")
    assert replica.program.curate.seed == prog.curate.seed + 1
    started = copy.deepcopy(replica.program)
    started.curate.seed = prog.curate.seed  # what a sweep before the change planned
    prepare_run_dir(started.run_dir, started)
    (Path(started.run_dir) / "checkpoints" / "10").mkdir(parents=True)
    with pytest.raises(UserError, match=r"curate.seed: 0 -> 1"):
        prepare_run_dir(replica.program.run_dir, replica.program, write=False)
    keep_started_config(replica)
    assert replica.program.curate.seed == prog.curate.seed
    prepare_run_dir(replica.program.run_dir, replica.program)
    # finished before the change: reused as it is, and said so with its seed
    from datarater.programs.sweep import note_curator_seed

    capsys.readouterr()
    note_curator_seed(next(x for x in plan_seed_runs(prog, {"random": 0.5}) if x.curator == "random"))
    assert "finished with curate.seed=0 (a sweep now draws 1): reused as it is" in capsys.readouterr().err
    note_curator_seed(r)  # a run of the sweep's own seeds: nothing to say
    assert capsys.readouterr().err == ""


def test_replicas_are_apart_from_the_run_that_picked_the_ratio():
    """With sweep.select_apart (the default) every tested point has sweep.seeds replicas of seeds
    +1..+seeds, none of them the picking run; without it, the picking run is the first of sweep.seeds."""
    from datarater.programs.sweep_plan import apart, plan_seed_runs

    args = ["corpus.paths=[x.jsonl]", "sweep.curators=[datarater,random,oracle]", "sweep.seeds=3"]
    for extra, offsets in [([], [1, 2, 3]), (["sweep.select_apart=false"], [1, 2])]:
        prog = compose(SUBCOMMANDS["sweep"], args + extra)
        runs = plan_seed_runs(prog, {"datarater": 0.25, "random": 0.5, "oracle": 0.0})
        points = {(r.curator, r.discard) for r in runs}
        # unfiltered; each curator at its best ratio; random and the oracle at each of those ratios
        assert points == {("none", 0.0), ("datarater", 0.25), ("random", 0.25), ("oracle", 0.25), ("random", 0.5),
                          ("oracle", 0.5)}
        for point in points:
            seeds = sorted(r.program.train.seed - prog.train.seed for r in runs if (r.curator, r.discard) == point)
            assert seeds == offsets
        assert all(r.program.curate.seed - prog.curate.seed == r.program.train.seed - prog.train.seed for r in runs)
    assert not apart(compose(SUBCOMMANDS["sweep"], [*args[:2], "sweep.seeds=1"]))  # one seed: no test to keep apart


def test_the_report_reads_which_protocol_a_comparison_used(tmp_path):
    """`datarater report` builds the baseline spread from the replicas the sweep's comparison tested:
    its protocol and seeds as its comparison.json says (one written before the keys: not apart, the
    config's seeds), and as configured before there is one."""
    from datarater.programs.report import tested_protocol

    prog = compose(SUBCOMMANDS["sweep"], ["corpus.paths=[x.jsonl]", "sweep.seeds=3"])
    assert tested_protocol(tmp_path, prog) == (True, 3, 1)  # not run yet: as configured
    for written, expected in [({"set": "validation", "rows": []}, (False, 3, 1)),
                              ({"select_apart": True, "seeds": 5, "select_seeds": 2, "rows": []}, (True, 5, 2))]:
        (tmp_path / "comparison.json").write_text(json.dumps(written))
        assert tested_protocol(tmp_path, prog) == expected


def test_lms_left_counts_what_the_quickstart_sweep_will_train(tmp_path):
    """The quickstart's ETA counts the sweep's LMs before it starts: 4 runs at the default ratios and
    curators, then 3 replicas each of the unfiltered LM, the rater, random and the oracle (16 in all, as
    the run of 2026-12-06 trained); full=true: 25 runs and 13 replicated points (64). Finished runs
    are not counted again."""
    from datarater.programs.quickstart import sweep_program
    from datarater.programs.sweep_plan import lms_left

    prog = compose(SUBCOMMANDS["quickstart"], [])
    sw = sweep_program(prog, tmp_path)
    assert lms_left(sw) == (16, 16)
    for name in ("nano-none-0", "nano-random-0.25-seed2", "nano-random-0.25-seed4"):  # seed4 is not a replica
        (tmp_path / "sweep" / "lm" / name).mkdir(parents=True)
        (tmp_path / "sweep" / "lm" / name / "summary.json").write_text("{}")
    assert lms_left(sw) == (14, 16)
    full = compose(SUBCOMMANDS["quickstart"], ["quickstart.full=true"])
    assert lms_left(sweep_program(full, tmp_path / "f")) == (64, 64)


def test_lms_left_is_exact_once_the_ratios_are_picked(tmp_path):
    """With step 1 finished and the rater no better than unfiltered (best ratio 0), the replicas are
    those of the unfiltered LM, random and the oracle at 25%: 9 of 13 LMs left; a replica of the rater
    left over from an earlier sweep is not one of them, a finished replica that is counts as done, and
    one that resumes counts the share of its steps left."""
    from datarater.programs.quickstart import sweep_program
    from datarater.programs.sweep_plan import lms_left

    sw = sweep_program(compose(SUBCOMMANDS["quickstart"], []), tmp_path)
    lm = tmp_path / "sweep" / "lm"
    for name, nll in [("nano-none-0", 2.7), ("nano-datarater-0.25", 2.8), ("nano-random-0.25", 2.6),
                      ("nano-oracle-0.25", 2.5), ("nano-datarater-0.25-seed1", 2.6)]:
        (lm / name).mkdir(parents=True)
        (lm / name / "summary.json").write_text(json.dumps({"final_nll_sets": {"validation": nll, "target": nll}}))
    assert lms_left(sw) == (9, 13)
    (lm / "nano-oracle-0.25-seed3").mkdir()
    (lm / "nano-oracle-0.25-seed3" / "summary.json").write_text("{}")
    assert lms_left(sw) == (8, 13)
    # a replica that resumes from its checkpoint of step 50 (of 150) has 2/3 of an LM left; a save
    # that never finished is no checkpoint
    for ckpt in ("50", "100.orbax-checkpoint-tmp-1"):
        (lm / "nano-random-0.25-seed1" / "checkpoints" / ckpt).mkdir(parents=True)
    assert lms_left(sw) == (pytest.approx(7 + 2 / 3), 13)


def test_lms_left_picks_the_ratios_on_the_raters_target_and_counts_only_this_sweeps_larger_runs(tmp_path):
    """A sweep that names no target takes its rater's, as `sweep.run` does: on the target the rater
    wins at 25% (3 replicated points), on the validation split it would not (1). Before step 1 ends, a
    finished larger LM of a point this sweep has not is not counted as done."""
    from datarater.programs.sweep_plan import lms_left

    rater = tmp_path / "rater"
    rater.mkdir()
    (rater / "config.yaml").write_text("meta:\n  target:\n    labels: [clean]\n")
    prog = compose(SUBCOMMANDS["sweep"], ["corpus.paths=[x.jsonl]", f"run_dir={tmp_path / 'sw'}", f"curate.rater_run={rater}",
                                          "sweep.curators=[datarater,random]", "sweep.ratios=[0,0.25]", "sweep.seeds=3",
                                          "sweep.larger=[micro]"])
    lm = tmp_path / "sw" / "lm"
    for name in ("micro-none-0", "micro-random-0.5"):  # one of this sweep's larger runs, one of another's
        (lm / name).mkdir(parents=True)
        (lm / name / "summary.json").write_text("{}")
    # step 1 unfinished: 3 runs, at most 3 points x 3 replicas, 3 larger runs of which 1 is done
    assert lms_left(prog) == (3 + 9 + 2, 3 + 9 + 3)
    for name, val, target in [("nano-none-0", 2.5, 2.5), ("nano-datarater-0.25", 2.6, 2.4), ("nano-random-0.25", 2.6, 2.6)]:
        (lm / name).mkdir(parents=True)
        (lm / name / "summary.json").write_text(json.dumps({"final_nll_sets": {"validation": val, "target": target}}))
    # picked on the target: none, the rater and random at 25% replicated, micro unfiltered and the rater's
    assert lms_left(prog) == (9 + 1, 3 + 9 + 2)


def test_a_phase_eta_goes_at_the_time_of_a_whole_run_when_there_is_one():
    from datarater.programs.sweep_runs import phase_eta

    assert phase_eta([], 3.0) == float("inf")
    assert phase_eta([(30.0, 0.05)], 5.0) == pytest.approx(3000.0)  # a resumed run alone: per share
    assert phase_eta([(30.0, 0.05), (90.0, 1.0)], 2.5) == pytest.approx(225.0)  # its fixed costs do not scale


@pytest.mark.parametrize("curators,ratios", [(["datarater", "random"], [0, 0.25, 0.5, 0.75]),
                                              (["random", "oracle"], [0, 0.25, 0.5, 0.75]), (["datarater"], [0])])
def test_lms_left_is_the_most_replicas_any_picked_ratios_can_give(tmp_path, curators, ratios):
    import itertools

    from datarater.programs.sweep_plan import lms_left, plan_seed_runs, plan_stage1

    prog = compose(SUBCOMMANDS["sweep"], ["corpus.paths=[x.jsonl]", f"run_dir={tmp_path}", f"sweep.curators=[{','.join(curators)}]",
                                          f"sweep.ratios=[{','.join(map(str, ratios))}]"])
    most = max(len(plan_seed_runs(prog, dict(zip(curators, best, strict=True))))
               for best in itertools.product(ratios, repeat=len(curators)))
    assert lms_left(prog) == (len(plan_stage1(prog)) + most,) * 2


def test_a_full_quickstart_after_the_default_one_plans_only_the_work_left(tmp_path):
    """What made its ETA 0:17 for 39 minutes: the targeted rater, its scores and the default run's 16
    LMs are done, so the plan holds the same-corpus rater, its scores, 48 LMs, the probe."""
    from datarater.programs.quickstart import SAMECORPUS, plan_stages, sweep_program
    from datarater.programs.quickstart_clock import REFERENCE_SECONDS as ref

    for path in ("meta/rater", "meta/summary.json", "scores/summary.json"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).mkdir() if path.endswith("rater") else (tmp_path / path).write_text("{}")
    for point in ("none-0", "datarater-0.25", "random-0.25", "oracle-0.25"):
        for suffix in ("", "-seed1", "-seed2", "-seed3"):
            (tmp_path / "sweep" / "lm" / f"nano-{point}{suffix}").mkdir(parents=True)
            (tmp_path / "sweep" / "lm" / f"nano-{point}{suffix}" / "summary.json").write_text("{}")
    full = compose(SUBCOMMANDS["quickstart"], ["quickstart.full=true"])
    assert SAMECORPUS in full.quickstart.full_curators
    assert plan_stages(full, tmp_path, [False, True], sweep_program(full, tmp_path)) == [
        ("corpus", ref["corpus"]), ("meta-train", ref["rater"]), ("score", ref["scores"]), ("sweep", 48 * ref["lm"]),
        ("probe", ref["probe"]), ("report", ref["report"] + 64 * ref["report_per_lm"])]


def test_quickstart_stage_times_add_up_over_the_runs_in_a_folder(tmp_path):
    """The full=true run after the default one: its sweep time adds to the default run's, the report's
    is its own; an unreadable quickstart.json gives this run's times only."""
    from datarater.programs.quickstart import stage_times

    (tmp_path / "quickstart.json").write_text(json.dumps({"stages": {"sweep": 577.0, "report": 28.0, "meta-train": 141.0}}))
    now = {"sweep": 1625.0, "report": 104.0, "meta-train_samecorpus": 121.0, "probe": 467.0}
    assert stage_times(tmp_path, now) == {"sweep": 2202.0, "report": 104.0, "meta-train": 141.0,
                                          "meta-train_samecorpus": 121.0, "probe": 467.0}
    (tmp_path / "quickstart.json").write_text('{"stages": [1, 2]}')
    assert stage_times(tmp_path, now) == now
