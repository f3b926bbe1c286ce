"""Zero-shot multiple-choice tasks read from local JSON Lines files in their published schemas.

Each item becomes an `MCItem`: a context and the continuations to score after it. Prompts follow
lm-eval-harness / OLMES ("Question: ...\\nAnswer:" and " <choice>"); WinoGrande uses partial
scoring (the option is put into the context, the rest of the sentence is the continuation).

The schema is detected from the keys of the first item. An unknown schema or a malformed item
stops with a `UserError` naming the file (and line).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datarater.errors import UserError
from datarater.remote import fetch, is_url, local_path


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question: choice ``i`` is scored as ``continuations[i]`` after its context.

    ``choice_contexts`` (WinoGrande) gives each choice its own context; otherwise all choices
    share ``context``. ``choices`` are the answer texts as lm-eval-harness's ``doc_to_choice``
    gives them (no leading delimiter; WinoGrande's options): the length normaliser of ``acc_norm``
    (characters) and ``acc_bytes`` (UTF-8 bytes); None = the continuations themselves.
    """

    context: str
    continuations: list[str]
    label: int
    choice_contexts: list[str] | None = None
    choices: list[str] | None = None

    def request(self, i: int) -> tuple[str, str]:
        """``(context, continuation)`` of choice ``i``."""
        ctx = self.choice_contexts[i] if self.choice_contexts is not None else self.context
        return ctx, self.continuations[i]

    def choice_texts(self) -> list[str]:
        """What ``acc_norm`` and ``acc_bytes`` divide by the length of, one per choice."""
        return list(self.choices) if self.choices is not None else list(self.continuations)


@dataclass
class Task:
    name: str  # the file's stem, e.g. "piqa_validation"
    schema: str  # a key of SCHEMAS
    items: list[MCItem] = field(default_factory=list)
    path: str = ""  # as given: a local path or an fsspec URL (messages name it)
    skipped_blank_lines: int = 0
    local: str = ""  # the file read: the path itself, or the local copy of a URL


class _Malformed(Exception):
    """An item that does not fit its schema (the loader adds file and line)."""


def _get(rec: dict, key: str) -> Any:
    if key not in rec:
        raise _Malformed(f"missing key '{key}'")
    return rec[key]


def _text(rec: dict, key: str) -> str:
    value = _get(rec, key)
    if not isinstance(value, str):
        raise _Malformed(f"'{key}' must be a string, got {type(value).__name__}")
    return value


def _index(value: Any, key: str, n: int, base: int = 0) -> int:
    """A label given as an int or a digit string, ``base``-based, checked against ``n`` choices."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _Malformed(f"'{key}' must be an integer label, got {value!r}")
    try:
        i = int(value) - base
    except ValueError:
        raise _Malformed(f"'{key}' must be an integer label, got {value!r}") from None
    if not 0 <= i < n:
        raise _Malformed(f"'{key}' = {value!r} is out of range for {n} choices")
    return i


def _choices(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _Malformed(f"'{key}' must be a non-empty list of strings, got {value!r}"[:200])
    if not all(isinstance(c, str) for c in value):
        raise _Malformed(f"'{key}' must be a list of strings")
    return list(value)


def _qa(question: str, choices: list[str], label: int) -> MCItem:
    return MCItem(f"Question: {question}\nAnswer:", [f" {c}" for c in choices], label, choices=list(choices))


def _piqa(rec: dict) -> MCItem:
    sols = [_text(rec, "sol1"), _text(rec, "sol2")]
    return _qa(_text(rec, "goal"), sols, _index(_get(rec, "label"), "label", 2))


def _siqa(rec: dict) -> MCItem:
    answers = [_text(rec, k) for k in ("answerA", "answerB", "answerC")]
    question = f"{_text(rec, 'context')} {_text(rec, 'question')}"
    return _qa(question, answers, _index(_get(rec, "label"), "label", 3, base=1))


def _commonsense_qa(rec: dict) -> MCItem:
    choices = _get(rec, "choices")
    if not isinstance(choices, dict):
        raise _Malformed("'choices' must be an object with 'label' and 'text' lists")
    labels = _choices(choices.get("label"), "choices.label")
    texts = _choices(choices.get("text"), "choices.text")
    if len(labels) != len(texts):
        raise _Malformed(f"'choices' has {len(labels)} labels but {len(texts)} texts")
    key = _get(rec, "answerKey")
    if key not in labels:
        raise _Malformed(f"'answerKey' = {key!r} is not one of the choice labels {labels}")
    return _qa(_text(rec, "question"), texts, labels.index(key))


def _winogrande(rec: dict) -> MCItem:
    sentence = _text(rec, "sentence")
    if "_" not in sentence:
        raise _Malformed("'sentence' has no '_' blank to fill")
    options = [_text(rec, "option1"), _text(rec, "option2")]
    cut = sentence.index("_")
    rest = " " + sentence[cut + 1 :].strip()
    prefix = sentence[:cut]
    return MCItem(prefix, [rest, rest], _index(_get(rec, "answer"), "answer", 2, base=1),
                  choice_contexts=[prefix + o for o in options], choices=options)


def _query_choices_gold(rec: dict) -> MCItem:
    query = _text(rec, "query")
    choices = _choices(_get(rec, "choices"), "choices")
    label = _index(_get(rec, "gold"), "gold", len(choices))
    # ARC-style queries are questions ("Question: ..."): prompt the answer; HellaSwag and
    # OpenBookQA queries are sentence beginnings that the choices complete.
    context = f"{query}\nAnswer:" if query.startswith("Question:") and "Answer:" not in query else query
    return MCItem(context, [f" {c}" for c in choices], label, choices=list(choices))


@dataclass(frozen=True)
class Schema:
    keys: tuple[str, ...]  # keys that identify the schema (all present in the first item)
    parse: Callable[[dict], MCItem]
    description: str


SCHEMAS: dict[str, Schema] = {
    "piqa": Schema(("goal", "sol1", "sol2", "label"), _piqa, "PIQA: goal, sol1, sol2, label (0/1)"),
    "siqa": Schema(("context", "question", "answerA", "answerB", "answerC", "label"), _siqa,
                   "SIQA: context, question, answerA/B/C, label ('1'..'3')"),
    "commonsense_qa": Schema(("question", "choices", "answerKey"), _commonsense_qa,
                             "CommonsenseQA: question, choices {label, text}, answerKey"),
    "winogrande": Schema(("sentence", "option1", "option2", "answer"), _winogrande,
                         "WinoGrande: sentence with '_', option1, option2, answer ('1'/'2')"),
    "query_choices_gold": Schema(("query", "choices", "gold"), _query_choices_gold,
                                 "HellaSwag-OLMES / ARC-Easy / ARC-Challenge / OpenBookQA: query, choices, gold"),
}


def detect_schema(keys: list[str] | set[str], where: str) -> str:
    """The schema whose identifying keys are all in ``keys``."""
    present = set(keys)
    for name, schema in SCHEMAS.items():
        if set(schema.keys) <= present:
            return name
    known = "; ".join(s.description for s in SCHEMAS.values())
    raise UserError(f"{where}: unknown task schema; keys seen: {sorted(present)}; schemas known: {known}")


def _lines(f) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of a file opened in binary mode, a leading UTF-8 BOM dropped."""
    for line_no, raw in enumerate(f, start=1):
        yield line_no, raw.removeprefix(b"\xef\xbb\xbf") if line_no == 1 else raw


def count_lines(path: str | Path) -> int:
    """Non-blank lines of a task file (lm-eval's "original" sample count), read as `_records` reads
    them but never parsed: a line past an ``eval.limit`` that is not valid is not an error here."""
    with open(path, "rb") as f:
        return sum(1 for _, raw in _lines(f) if raw.strip())


def _records(path: Path, shown: str = "") -> Iterator[tuple[int, dict | None]]:
    """``(line number, record)``; ``None`` for a blank line. Messages name ``shown`` (default ``path``)."""
    name = shown or path
    try:
        with open(path, "rb") as f:
            for line_no, raw in _lines(f):
                if not raw.strip():
                    yield line_no, None
                    continue
                try:
                    rec = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise UserError(f"{name}:{line_no}: not a valid JSON line: {e}") from None
                if not isinstance(rec, dict):
                    raise UserError(f"{name}:{line_no}: expected a JSON object, got {type(rec).__name__}")
                yield line_no, rec
    except OSError as e:
        raise UserError(f"{name}: cannot be read: {e.strerror}") from None


def load_task(path: str | Path, limit: int = 0) -> Task:
    """The first ``limit`` items (all if 0) of a task file (a local path or an fsspec URL)."""
    shown = str(path)
    if is_url(shown):
        path = Path(fetch(shown, "eval.tasks"))  # a local copy; messages name the URL
    else:
        path = Path(local_path(shown)).expanduser()
        shown = str(path)
    if not path.is_file():
        raise UserError(f"task file '{path}' does not exist" + (" (it is a directory)" if path.is_dir() else ""))
    name = path.name.split(".")[0]
    task = Task(name=name, schema="", path=shown, local=str(path))
    parse: Callable[[dict], MCItem] | None = None
    for line_no, rec in _records(path, shown):
        if rec is None:
            task.skipped_blank_lines += 1
            continue
        if parse is None:
            task.schema = detect_schema(list(rec), f"{path}:{line_no}")
            parse = SCHEMAS[task.schema].parse
        try:
            task.items.append(parse(rec))
        except _Malformed as e:
            raise UserError(f"{shown}:{line_no}: malformed {task.schema} item: {e}") from None
        if 0 < limit <= len(task.items):
            break
    if not task.items:
        raise UserError(f"task file '{shown}' has no items")
    return task


def expand_task_paths(patterns: list[str]) -> list[Path | str]:
    """Files named by ``patterns`` (local globs allowed; a URL names one file), in the order given,
    without repeats."""
    out: dict[Path | str, None] = {}
    for pattern in patterns:
        if is_url(pattern):
            out.setdefault(pattern, None)
            continue
        expanded = os.path.expanduser(local_path(pattern))
        if glob.has_magic(expanded):
            matches = sorted(Path(m) for m in glob.glob(expanded) if os.path.isfile(m))
            if not matches:
                raise UserError(f"eval.tasks: '{pattern}' matches no file")
        else:
            matches = [Path(expanded)]
        for m in matches:
            out.setdefault(m, None)
    return list(out)


def load_tasks(patterns: list[str], limit: int = 0) -> list[Task]:
    """Every task file named by ``patterns``; task names are made unique with the file's folder."""
    tasks = [load_task(p, limit) for p in expand_task_paths(patterns)]
    seen: dict[str, int] = {}
    for t in tasks:
        seen[t.name] = seen.get(t.name, 0) + 1
    for t in tasks:
        if seen[t.name] > 1:
            t.name = f"{Path(t.path).parent.name}/{t.name}"
    return tasks
