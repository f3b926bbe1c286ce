"""`datarater-lm-eval`: lm-evaluation-harness's command line with the `datarater` model registered.

    datarater-lm-eval --model datarater --model_args run=RUN --local_tasks ../shared/data/eval/piqa_validation.jsonl \
        --limit 50 --output_path runs/lm-eval

Every argument is lm-eval's (``lm_eval --help``), plus ``--local_tasks GLOB[,GLOB]``: task files in
the schemas `datarater eval` reads become lm-eval tasks named ``local_<file stem>`` (with
``--tasks`` omitted, those are the tasks run). Offline: the Hugging Face hub is switched off unless
``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` are set otherwise.
"""

from __future__ import annotations

import os
import sys
import tempfile

from datarater.errors import UserError

LOCAL = "--local_tasks"


def _pop_option(args: list[str], name: str) -> str | None:
    """The value of ``name VALUE`` or ``name=VALUE`` in ``args``, removed from them."""
    for i, a in enumerate(args):
        if a == name:
            if i + 1 >= len(args):
                raise UserError(f"{name} needs a value: files or globs, comma-separated")
            value = args[i + 1]
            del args[i : i + 2]
            return value
        if a.startswith(name + "="):
            del args[i]
            return a.split("=", 1)[1]
    return None


def prepare_argv(argv: list[str], task_dir: str) -> list[str]:
    """lm-eval's argv for ours: ``--local_tasks`` written as task YAMLs into ``task_dir`` and added
    with ``--include_path`` (and as ``--tasks`` when none are given). lm-eval takes one include
    path: a folder the user gave with ``--include_path`` is copied into ``task_dir`` beside them."""
    import shutil

    from datarater.eval.harness import write_local_tasks

    args = list(argv)
    local = _pop_option(args, LOCAL)
    if local is not None:
        names = write_local_tasks([p for p in local.split(",") if p], task_dir)
        theirs = _pop_option(args, "--include_path")
        if theirs is not None:
            if not os.path.isdir(theirs):
                raise UserError(f"--include_path: '{theirs}' is not a folder of task YAMLs")
            shutil.copytree(theirs, os.path.join(task_dir, "include_path"))
        args += ["--include_path", task_dir]
        if not any(a == "--tasks" or a.startswith("--tasks=") for a in args):
            args += ["--tasks", ",".join(names)]
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        try:
            import lm_eval.__main__ as harness_cli
        except ImportError:
            raise UserError("lm-evaluation-harness is not installed: pip install 'datarater[interop]' "
                            "(or pip install lm-eval)") from None
        import datarater.eval.harness  # noqa: F401 - registers --model datarater

        with tempfile.TemporaryDirectory(prefix="datarater-lm-eval-") as task_dir:
            sys.argv = ["lm-eval", *prepare_argv(argv, task_dir)]
            harness_cli.cli_evaluate()
        return 0
    except UserError as e:
        print(f"datarater-lm-eval: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
