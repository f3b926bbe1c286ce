"""Multiple-choice task files: every published schema loads with the right items and gold answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datarater.errors import UserError
from datarater.eval.tasks import MCItem, load_task, load_tasks

EVAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"  # ../shared/data/eval

# The item counts and schemas of ../shared/data/README.md.
EXPECTED = {
    "piqa_validation.jsonl": (1838, "piqa"),
    "siqa_validation.jsonl": (1954, "siqa"),
    "commonsense_qa_validation.jsonl": (1221, "commonsense_qa"),
    "winogrande_xl_validation.jsonl": (1267, "winogrande"),
    "hellaswag_val_olmes_subsample1000.jsonl": (1000, "query_choices_gold"),
    "arc_easy.jsonl": (2376, "query_choices_gold"),
    "arc_challenge.jsonl": (1172, "query_choices_gold"),
    "openbook_qa.jsonl": (500, "query_choices_gold"),
}


def raw_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def gold_text(file: str, raw: dict) -> tuple[str, int]:
    """The gold answer's text and the number of choices, read straight from the raw record."""
    if file.startswith("piqa"):
        return raw[f"sol{int(raw['label']) + 1}"], 2
    if file.startswith("siqa"):
        return raw["answer" + "ABC"[int(raw["label"]) - 1]], 3
    if file.startswith("commonsense"):
        labels = raw["choices"]["label"]
        return raw["choices"]["text"][labels.index(raw["answerKey"])], len(labels)
    if file.startswith("winogrande"):
        return raw["option" + raw["answer"]], 2
    return raw["choices"][raw["gold"]], len(raw["choices"])


@pytest.mark.skipif(not EVAL_DIR.is_dir(), reason="../shared/data/eval is not present")
@pytest.mark.parametrize("file", sorted(EXPECTED))
def test_every_schema_loads_with_its_count_and_gold_answers(file):
    count, schema = EXPECTED[file]
    task = load_task(EVAL_DIR / file)
    assert (len(task.items), task.schema) == (count, schema)
    raws = raw_rows(EVAL_DIR / file)
    assert len(raws) == count
    for item, raw in zip(task.items, raws, strict=True):
        text, n_choices = gold_text(file, raw)
        assert len(item.continuations) == n_choices
        ctx, cont = item.request(item.label)
        if schema == "winogrande":  # partial scoring: the gold option sits at the blank in the context
            cut = raw["sentence"].index("_")
            assert ctx == raw["sentence"][:cut] + text
            assert cont == " " + raw["sentence"][cut + 1 :].strip()
        else:
            assert cont == " " + text
    limited = load_task(EVAL_DIR / file, limit=7)
    assert limited.items == task.items[:7]


@pytest.mark.skipif(not EVAL_DIR.is_dir(), reason="../shared/data/eval is not present")
def test_prompts_follow_the_harness_formats():
    piqa = load_task(EVAL_DIR / "piqa_validation.jsonl", limit=1).items[0]
    raw = raw_piqa = raw_rows(EVAL_DIR / "piqa_validation.jsonl")[0]
    assert piqa.context == f"Question: {raw['goal']}\nAnswer:"
    arc = load_task(EVAL_DIR / "arc_easy.jsonl", limit=1).items[0]
    raw = raw_rows(EVAL_DIR / "arc_easy.jsonl")[0]
    assert arc.context == raw["query"] + "\nAnswer:"  # "Question: ..." gets an answer prompt
    hella = load_task(EVAL_DIR / "hellaswag_val_olmes_subsample1000.jsonl", limit=1).items[0]
    raw = raw_rows(EVAL_DIR / "hellaswag_val_olmes_subsample1000.jsonl")[0]
    assert hella.context == raw["query"] and hella.continuations == [" " + c for c in raw["choices"]]
    assert hella.choice_texts() == raw["choices"] and piqa.choice_texts() == [raw_piqa["sol1"], raw_piqa["sol2"]]


def test_winogrande_partial_scoring_by_hand(tmp_path):
    f = tmp_path / "wino.jsonl"
    f.write_text(json.dumps({"sentence": "The cup fell off the table because _ was slippery.", "option1": "the cup",
                             "option2": "the table", "answer": "2"}) + "\n")
    item = load_task(f).items[0]
    assert item == MCItem("The cup fell off the table because ", [" was slippery.", " was slippery."], 1,
                          ["The cup fell off the table because the cup", "The cup fell off the table because the table"],
                          choices=["the cup", "the table"])  # lm-eval normalises by the options' lengths


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


PIQA_OK = json.dumps({"goal": "g", "sol1": "a", "sol2": "b", "label": 0})


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"goal": "g", "sol1": "a", "label": 1', "not a valid JSON line"),
        (json.dumps({"goal": "g", "sol1": "a", "label": 1}), "missing key 'sol2'"),
        (json.dumps({"goal": "g", "sol1": "a", "sol2": "b", "label": 2}), "out of range"),
        (json.dumps({"goal": "g", "sol1": "a", "sol2": "b", "label": "x"}), "integer label"),
        (json.dumps({"goal": "g", "sol1": ["a"], "sol2": "b", "label": 0}), "'sol1' must be a string"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_a_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    f = write_lines(tmp_path / "piqa.jsonl", [PIQA_OK, "", bad_line, PIQA_OK])
    with pytest.raises(UserError, match=message) as e:
        load_task(f)
    assert f"{f}:3:" in str(e.value)


def test_a_limit_stops_before_a_bad_line_and_the_whole_file_is_still_counted(tmp_path):
    from datarater.eval.accuracy import _items_in_file

    f = tmp_path / "piqa.jsonl"
    f.write_bytes(f"{PIQA_OK}\n\n{PIQA_OK}\n".encode() + b'{"goal": "\xff"}\n')  # line 4: not UTF-8
    task = load_task(f, limit=2)
    assert len(task.items) == 2 and _items_in_file(task) == 3  # lm-eval's "original": non-blank lines
    with pytest.raises(UserError, match=f"{f}:4: not a valid JSON line"):
        load_task(f)
    f.write_bytes(b"\xef\xbb\xbf\n" + f"{PIQA_OK}\n{PIQA_OK}\n".encode())  # a first line holding only a BOM is blank
    assert _items_in_file(load_task(f, limit=1)) == 2


@pytest.mark.parametrize(
    "record, message",
    [
        ({"query": "q", "choices": [], "gold": 0}, "non-empty list"),
        ({"query": "q", "choices": ["a", "b"], "gold": 2}, "out of range"),
        ({"question": "q", "choices": {"label": ["A", "B"], "text": ["x", "y"]}, "answerKey": "C"}, "not one of the choice labels"),
        ({"context": "c", "question": "q", "answerA": "a", "answerB": "b", "answerC": "c", "label": "0"}, "out of range"),
        ({"sentence": "no blank here", "option1": "a", "option2": "b", "answer": "1"}, "no '_' blank"),
    ],
)
def test_malformed_items_of_each_schema(tmp_path, record, message):
    f = write_lines(tmp_path / "task.jsonl", [json.dumps(record)])
    with pytest.raises(UserError, match=message) as e:
        load_task(f)
    assert f"{f}:1:" in str(e.value)


def test_unknown_schema_names_file_keys_and_known_schemas(tmp_path):
    f = write_lines(tmp_path / "mystery.jsonl", [json.dumps({"prompt": "p", "answers": ["a"], "correct": 0})])
    with pytest.raises(UserError) as e:
        load_task(f)
    msg = str(e.value)
    assert f"{f}:1" in msg and "unknown task schema" in msg
    assert "['answers', 'correct', 'prompt']" in msg  # the keys seen
    assert "PIQA" in msg and "WinoGrande" in msg and "query, choices, gold" in msg  # the schemas known


def test_missing_empty_and_globbed_task_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_task(tmp_path / "nope.jsonl")
    empty = write_lines(tmp_path / "empty.jsonl", [""])
    with pytest.raises(UserError, match="has no items"):
        load_task(empty)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_lines(tmp_path / "a" / "piqa.jsonl", [PIQA_OK])
    write_lines(tmp_path / "b" / "piqa.jsonl", [PIQA_OK, PIQA_OK])
    tasks = load_tasks([str(tmp_path / "*" / "piqa.jsonl")])
    assert [(t.name, len(t.items)) for t in tasks] == [("a/piqa", 1), ("b/piqa", 2)]
    with pytest.raises(UserError, match="matches no file"):
        load_tasks([str(tmp_path / "*.nothing")])


def test_eval_config_composes_and_validates(tmp_path):
    from datarater.cli import Subcommand, compose
    from datarater.config.eval import EvalProgram, validate_eval
    from datarater.programs.eval import run as evaluate_lm

    sub = Subcommand("eval", EvalProgram, "datarater.programs.eval:run", (("eval", validate_eval),), "evaluate")
    prog = compose(sub, ["lm_run=runs/x", "eval.tasks=[a.jsonl,b.jsonl]", "eval.limit=5"])
    assert (prog.lm_run, prog.run_dir, prog.eval.tasks, prog.eval.limit) == ("runs/x", "", ["a.jsonl", "b.jsonl"], 5)
    for override, key in [("eval.limit=-1", "eval.limit"), ("eval.normalize=per_token", "eval.normalize"),
                          ("eval.batch_size=0", "eval.batch_size"), ("eval.tasks=['']", r"eval.tasks\[0\]")]:
        with pytest.raises(UserError, match=key):
            compose(sub, [override])
    with pytest.raises(UserError, match="'lm_run' is empty"):
        evaluate_lm(compose(sub, []))
    # a bad task file stops the run before the LM is even looked for
    bad = write_lines(tmp_path / "bad.jsonl", ["{not json"])
    with pytest.raises(UserError, match=f"{bad}:1"):
        evaluate_lm(compose(sub, [f"lm_run={tmp_path / 'no-run'}", f"eval.tasks=[{bad}]"]))
