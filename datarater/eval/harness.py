"""lm-evaluation-harness interop: the `datarater` model (a train-lm run scored by our log-likelihood scorer) and local task configs.

Importing this module registers the model with lm-eval (``--model datarater --model_args
run=RUN``); `datarater-lm-eval` (``datarater.programs.lm_eval``) is lm-eval's command line with it
registered. lm-eval 0.4 has no plugin entry point for models, so the bare ``lm_eval`` command
cannot see a model defined outside its own package.

`write_local_tasks` turns the task files `datarater eval` reads (``../shared/data/eval``, their
published schemas) into lm-eval task YAMLs over the same local files, named ``local_<file stem>``,
with the prompts of `datarater.eval.tasks`: both tools then score the same requests.
"""

from __future__ import annotations

import json
from pathlib import Path

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from datarater.errors import UserError
from datarater.eval.tasks import expand_task_paths, load_task

# doc_to_text / doc_to_choice / doc_to_target (Jinja, as lm-eval's own YAMLs) per schema of
# `datarater.eval.tasks.SCHEMAS`, giving the contexts and continuations that module builds.
_ARC_TEXT = ("{% if query.startswith('Question:') and 'Answer:' not in query %}{{query}}\nAnswer:"
             "{% else %}{{query}}{% endif %}")
HARNESS_PROMPTS: dict[str, tuple[str, str, str]] = {
    "piqa": ("Question: {{goal}}\nAnswer:", "{{[sol1, sol2]}}", "{{label}}"),
    "siqa": ("Question: {{context}} {{question}}\nAnswer:", "{{[answerA, answerB, answerC]}}",
             "{{(label | int) - 1}}"),
    "commonsense_qa": ("Question: {{question}}\nAnswer:", "{{choices.text}}", "{{choices.label.index(answerKey)}}"),
    "query_choices_gold": (_ARC_TEXT, "{{choices}}", "{{gold}}"),
}
TASK_PREFIX = "local_"


def write_local_tasks(patterns: list[str], out_dir: str | Path) -> list[str]:
    """One lm-eval task YAML (JSON is YAML) per task file named by ``patterns``, into ``out_dir``;
    returns the task names. A schema lm-eval cannot express in a YAML of its own (WinoGrande's
    partial scoring) stops with the file named."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for path in expand_task_paths(patterns):
        task = load_task(path, limit=1)  # its schema; a malformed file stops here, named
        if task.schema not in HARNESS_PROMPTS:
            raise UserError(f"{path}: schema '{task.schema}' has no local lm-eval task here (supported: "
                            f"{', '.join(HARNESS_PROMPTS)}); use lm-eval's own task for it")
        text, choice, target = HARNESS_PROMPTS[task.schema]
        name = TASK_PREFIX + task.name
        if name in names:
            raise UserError(f"{path}: a second task file named '{task.name}' (lm-eval task '{name}'); task names "
                            "come from file stems, so rename one of the files")
        config = {
            "task": name,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"validation": str(Path(path).absolute())}},
            "output_type": "multiple_choice",
            "validation_split": "validation",
            "doc_to_text": text,
            "doc_to_choice": choice,
            "doc_to_target": target,
            "target_delimiter": " ",
            "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                            for m in ("acc", "acc_norm", "acc_bytes")],
            "metadata": {"version": 1.0},
        }
        (out / f"{name}.yaml").write_text(json.dumps(config, indent=2) + "\n")
        names.append(name)
    return names


@register_model("datarater")
class DataRaterLM(LM):
    """A train-lm run's latest (or ``step``) checkpoint, scored with `datarater.eval.mc`.

    ``--model_args run=RUN[,step=N][,add_bos=true]``; ``--batch_size`` is the rows per forward
    pass (``auto``: 32). Contexts start with bos when the run trained with ``data.add_bos``, as in
    `datarater eval`. Generation is not offered: these LMs are evaluated by log-likelihood.
    """

    def __init__(self, run: str = "", step: int = -1, batch_size: int | str = 32, add_bos: bool | None = None,
                 **ignored) -> None:
        super().__init__()
        from datarater.data.tokenizer import make_tokenizer
        from datarater.train.load import load_lm

        if not run:
            raise UserError("--model_args run=RUN is missing: give a train-lm run directory")
        step = int(step)
        self.loaded = load_lm(run, None if step < 0 else step)
        data = self.loaded.program.data
        self.tokenizer = make_tokenizer(data)
        self.seq_len = data.seq_len
        self.add_bos = data.add_bos if add_bos is None else str(add_bos).lower() in ("1", "true", "yes")
        self.batch_size = 32 if str(batch_size).startswith("auto") else max(1, int(batch_size))

    def _score(self, pairs: list[tuple[str, str]]) -> tuple:
        from datarater.eval.mc import request_loglikelihoods

        return request_loglikelihoods(self.loaded.graphdef, self.loaded.params, self.tokenizer, pairs,
                                      self.seq_len, self.batch_size, self.add_bos)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        ll, greedy = self._score([tuple(r.args) for r in requests])
        return [(float(a), bool(g)) for a, g in zip(ll, greedy, strict=True)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        ll, _ = self._score([("", r.args[0]) for r in requests])  # an empty context is bos alone
        return [float(a) for a in ll]

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        raise UserError("the datarater lm-eval model scores log-likelihoods only: use multiple-choice or "
                        "perplexity tasks (output_type multiple_choice / loglikelihood / loglikelihood_rolling)")
