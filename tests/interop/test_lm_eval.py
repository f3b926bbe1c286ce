"""`datarater-lm-eval --model datarater` gives the accuracies of `datarater eval` on the same local task files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

INSTALL = "the interop extra is not installed: pip install torch==2.13.0 && pip install -e '.[interop]'"
pytest.importorskip("lm_eval", reason=INSTALL)

EVAL_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "eval"
TASKS = ["piqa_validation", "arc_easy"]


@pytest.mark.skipif(not EVAL_DIR.is_dir(), reason="../shared/data/eval is not present")
def test_lm_eval_and_datarater_eval_agree_on_piqa_and_arc_easy(swiglu_lm, tmp_path):
    from datarater.config.eval import EvalConfig, EvalProgram
    from datarater.programs.eval import run as evaluate_lm
    from datarater.programs.lm_eval import main

    files = [str(EVAL_DIR / f"{t}.jsonl") for t in TASKS]
    ours = evaluate_lm(EvalProgram(lm_run=str(swiglu_lm), run_dir=str(tmp_path / "ours"),
                                   eval=EvalConfig(tasks=files, limit=12, batch_size=16, max_sequences=8)))
    code = main(["--model", "datarater", "--model_args", f"run={swiglu_lm}", "--batch_size", "16",
                 "--local_tasks", ",".join(files), "--limit", "12", "--output_path", str(tmp_path / "harness")])
    assert code == 0
    (out,) = (tmp_path / "harness").rglob("results_*.json")
    theirs = json.loads(out.read_text())["results"]
    assert set(theirs) == {f"local_{t}" for t in TASKS}
    for t in TASKS:
        row, mine = theirs[f"local_{t}"], ours["results"][t]
        for key in ("acc,none", "acc_norm,none", "acc_bytes,none", "acc_stderr,none", "acc_norm_stderr,none"):
            assert row[key] == pytest.approx(mine[key], abs=1e-9), (t, key)
        assert ours["n-samples"][t]["effective"] == 12
    assert any(0 < ours["results"][t]["acc,none"] < 1 for t in TASKS)  # not two all-or-nothing answers


def test_winogrande_and_a_missing_run_are_clear_errors(tmp_path, capsys):
    from datarater.programs.lm_eval import main

    wino = tmp_path / "wino.jsonl"
    wino.write_text(json.dumps({"sentence": "A _ b.", "option1": "x", "option2": "y", "answer": "1"}) + "\n")
    assert main(["--model", "datarater", "--model_args", f"run={tmp_path}", "--local_tasks", str(wino)]) == 2
    assert "schema 'winogrande'" in capsys.readouterr().err
    piqa = tmp_path / "piqa.jsonl"
    piqa.write_text(json.dumps({"goal": "g", "sol1": "a", "sol2": "b", "label": 0}) + "\n")
    assert main(["--model", "datarater", "--model_args", f"run={tmp_path / 'nowhere'}", "--local_tasks", str(piqa)]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_local_tasks_beside_a_users_include_path_keep_both(tmp_path):
    from datarater.programs.lm_eval import prepare_argv

    piqa = tmp_path / "mini_piqa.jsonl"
    piqa.write_text(json.dumps({"goal": "g", "sol1": "a", "sol2": "b", "label": 0}) + "\n")
    theirs = tmp_path / "their_tasks"
    (theirs / "sub").mkdir(parents=True)
    (theirs / "sub" / "mine.yaml").write_text("task: mine\n")
    task_dir = tmp_path / "tasks"
    task_dir.mkdir()
    argv = prepare_argv(["--model", "datarater", "--include_path", str(theirs), "--local_tasks", str(piqa)],
                        str(task_dir))
    assert argv.count("--include_path") == 1 and argv[argv.index("--include_path") + 1] == str(task_dir)
    assert (task_dir / "include_path" / "sub" / "mine.yaml").read_text() == "task: mine\n"  # theirs, still found
    assert argv[argv.index("--tasks") + 1] == "local_mini_piqa"
    other = tmp_path / "other"
    other.mkdir()
    (other / "mini_piqa.jsonl").write_text(piqa.read_text())
    from datarater.errors import UserError

    with pytest.raises(UserError, match="a second task file named 'mini_piqa'.*rename one"):
        prepare_argv(["--local_tasks", f"{piqa},{other / 'mini_piqa.jsonl'}"], str(tmp_path / "t2"))
