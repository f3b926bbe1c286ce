"""The `datarater` command.

    datarater <subcommand> [key=value ...]      run it with Hydra overrides
    datarater <subcommand> --help               its config groups, options and keys

Each subcommand composes ``conf/<primary>.yaml`` with Hydra, merges the result into the program's
dataclass (``datarater.config``) so unknown keys and wrong types stop the run before any compute,
then calls a plain Python function with the typed config.
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from datarater import config as C
from datarater.config.curate import validate_curate, validate_filter, validate_score
from datarater.config.eval import EvalProgram, validate_eval
from datarater.errors import UserError
from datarater.hostmem import tune_malloc


@dataclass(frozen=True)
class Subcommand:
    primary: str  # conf/<primary>.yaml
    schema: type
    runner: str  # "module:function" taking the typed program config
    validators: tuple[tuple[str, Callable], ...]
    help: str


SUBCOMMANDS: dict[str, Subcommand] = {
    "params": Subcommand(
        "params", C.ParamsProgram, "datarater.programs.params:run", (("model", C.validate_model),),
        "print total and non-embedding parameter counts of a model preset (nothing is allocated)",
    ),
    "train-lm": Subcommand(
        "train_lm", C.TrainLMProgram, "datarater.programs.train_lm:run",
        (("model", C.validate_model), ("corpus", C.validate_corpus), ("data", C.validate_data),
         ("train", C.validate_train), ("mesh", C.validate_mesh), ("curate", validate_curate), ("eval", validate_eval),
         ("target", C.validate_target), ("logging", C.validate_logging)),
        "train a causal LM on a corpus (curate=<curator> curate.discard=<rho> filters it online); resumes",
    ),
    "meta-train": Subcommand(
        "meta_train", C.MetaTrainProgram, "datarater.programs.meta_train:run",
        (("model", C.validate_model), ("rater", C.validate_model), ("corpus", C.validate_corpus),
         ("data", C.validate_data), ("train", C.validate_inner_train), ("meta", C.validate_meta),
         ("mesh", C.validate_mesh), ("logging", C.validate_logging)),
        "meta-learn a DataRater on a corpus (bilevel); resumes if run_dir holds a checkpoint",
    ),
}

SUBCOMMANDS.update({
    "score": Subcommand(
        "score", C.ScoreProgram, "datarater.programs.score:run",
        (("curate", validate_curate), ("corpus", C.validate_corpus), ("data", C.validate_data), ("score", validate_score)),
        "score every sequence (or document) of a corpus split into parquet side files; restartable",
    ),
    "filter": Subcommand(
        "filter", C.FilterProgram, "datarater.programs.filter:run",
        (("curate", validate_curate), ("corpus", C.validate_corpus), ("data", C.validate_data),
         ("score", validate_score), ("filter", validate_filter)),
        "write the documents the per-item acceptance rule keeps at curate.discard, with a manifest",
    ),
    "eval": Subcommand(
        "eval", EvalProgram, "datarater.programs.eval:run", (("eval", validate_eval), ("logging", C.validate_logging)),
        "NLL (nats/token, bits/byte) and zero-shot multiple-choice accuracy of a train-lm run",
    ),
    "sweep": Subcommand(
        "sweep", C.SweepProgram, "datarater.programs.sweep:run",
        (("corpus", C.validate_corpus), ("data", C.validate_data), ("train", C.validate_train),
         ("mesh", C.validate_mesh), ("eval", validate_eval), ("sweep", C.validate_sweep),
         ("target", C.validate_target), ("logging", C.validate_logging)),
        "discard-ratio sweep per curator on the smallest model, then larger models at the best ratio",
    ),
    "export": Subcommand(
        "export", C.ExportProgram, "datarater.programs.export:run", (),
        "a train-lm LM (as LlamaForCausalLM) or a meta-train rater in Hugging Face formats: safetensors, config, tokenizer",
    ),
    "report": Subcommand(
        "report", C.ReportProgram, "datarater.programs.report:run", (),
        "report.md with plots for a sweep or quickstart run directory",
    ),
    "probe": Subcommand(
        "probe", C.ProbeProgram, "datarater.programs.probe:run",
        (("model", C.validate_model), ("corpus", C.validate_corpus), ("data", C.validate_data),
         ("train", C.validate_inner_train), ("meta", C.validate_meta)),
        "before meta-training: does the outer objective reward rejecting corrupted data, at which LM ages?",
    ),
    "quickstart": Subcommand(
        "quickstart", C.QuickstartProgram, "datarater.programs.quickstart:run",
        (("model", C.validate_model), ("rater", C.validate_model), ("corpus", C.validate_corpus),
         ("data", C.validate_data), ("train", C.validate_train), ("inner", C.validate_inner_train),
         ("meta", C.validate_meta), ("quickstart", C.validate_quickstart)),
        "the whole method on the embedded noisy corpus: meta-train, score, sweep, report (~13 min on 2 cores)",
    ),
})

from datarater.config.plan import PlanProgram, validate_plan, validate_plan_train  # noqa: E402

SUBCOMMANDS["plan"] = Subcommand(
    "plan", PlanProgram, "datarater.programs.plan:run",
    (("model", C.validate_model), ("rater", C.validate_model), ("mesh", C.validate_mesh), ("meta", C.validate_meta),
     ("train", validate_plan_train), ("plan", validate_plan)),
    "compile the training step (and meta-step) ahead of time per device count: memory and FLOPs per device",
)

def _field_names(schema: type) -> list[str]:
    return [f.name for f in fields(schema)]


def _allowed_under(schema: type, dotted: str) -> list[str]:
    """Keys allowed under the parent of a dotted key in a dataclass tree."""
    node: Any = schema
    for part in dotted.split(".")[:-1]:
        match = [f for f in fields(node) if f.name == part] if is_dataclass(node) else []
        if not match:
            return []
        node = match[0].default_factory() if callable(match[0].default_factory) else match[0].default  # type: ignore[misc]
        node = type(node) if is_dataclass(node) else node
    return _field_names(node) if is_dataclass(node) else []


def compose(sub: Subcommand, overrides: list[str], validate: bool = True):
    """Hydra composition, then structured validation; returns the typed program config."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

    from datarater.paths import conf_dir

    overrides = list(overrides)
    while True:
        try:
            with initialize_config_dir(config_dir=str(conf_dir()), version_base=None, job_name="datarater"):
                raw = hydra_compose(config_name=sub.primary, overrides=overrides)
            break
        except (HydraException, OmegaConfBaseException) as e:
            text = str(e).split("\nConfig search path:")[0].strip()
            unknown = re.match(r"Could not override '([^']+)'", text)
            if not unknown:
                raise UserError(f"config: {text}") from None
            key = unknown.group(1)
            allowed = _allowed_under(sub.schema, key)
            plain = [i for i, o in enumerate(overrides) if o.split("=", 1)[0] == key]
            if key.split(".")[-1] in allowed and plain:
                # A schema key that the group's YAML leaves at its default: set it all the same.
                overrides[plain[0]] = "++" + overrides[plain[0]]
                continue
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            raise UserError(f"unknown config key '{key}'{hint}") from None
    try:
        merged = OmegaConf.merge(OmegaConf.structured(sub.schema), raw)
        program = OmegaConf.to_object(merged)
    except ConfigKeyError as e:
        key = getattr(e, "full_key", None) or str(e)
        allowed = _allowed_under(sub.schema, str(key))
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        raise UserError(f"unknown config key '{key}'{hint}") from None
    except ValidationError as e:
        raise UserError(f"bad value for config key '{getattr(e, 'full_key', '?')}': {e.msg.splitlines()[0]}") from None
    except OmegaConfBaseException as e:
        raise UserError(f"config: {e}") from None
    for key, check in sub.validators if validate else ():
        check(getattr(program, key), key)
    return program


def print_help(name: str | None) -> None:
    if name is None:
        print(__doc__.strip().splitlines()[0] + "\n")
        print("usage: datarater <subcommand> [key=value ...]   |   datarater <subcommand> --help\n")
        print("subcommands:")
        for n, s in SUBCOMMANDS.items():
            print(f"  {n:<12} {s.help}")
        return
    from omegaconf import OmegaConf

    from datarater.paths import conf_dir

    sub = SUBCOMMANDS[name]
    print(f"datarater {name}: {sub.help}\n")
    print(f"usage: datarater {name} [group=option ...] [key=value ...]\n")
    print("config groups (choose with group=option):")
    root = conf_dir()
    for f in fields(sub.schema):
        d = root / f.name
        if d.is_dir():
            print(f"  {f.name:<8} {', '.join(sorted(p.stem for p in d.glob('*.yaml')))}")
    print("\nkeys and their defaults (set with key=value; lists as key=[a,b]):")
    print(OmegaConf.to_yaml(OmegaConf.structured(compose(sub, [], validate=False))))


def _quiet_libraries() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "jax", "orbax", "grain", "tensorflow_datasets", "etils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
    except ImportError:
        pass


CACHE_ENV = "DATARATER_COMPILATION_CACHE"


def _compilation_cache() -> None:
    """JAX's persistent compilation cache in ``$DATARATER_COMPILATION_CACHE`` (default
    ``~/.cache/datarater/jax``; ``off`` disables it): a sweep's LMs and a rerun compile each program
    once (a nano LM run on 2 CPU cores: 22.6 -> 13.8 s for 20 steps, most of it compilation)."""
    import jax

    where = os.environ.get(CACHE_ENV, "~/.cache/datarater/jax")
    if where.lower() in ("off", "0", "none", ""):
        return
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(where))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


_STORAGE_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}


def _stdout_to_devnull() -> None:
    """The reader of stdout went away (`datarater plan ... | head`): stop quietly, as a Unix tool does.
    What is left in stdout's buffer goes to /dev/null, so the flush at exit does not fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is no file (a test's stand-in)
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print_help(None)
        return 0
    name, rest = argv[0], argv[1:]
    try:
        if name not in SUBCOMMANDS:
            raise UserError(f"unknown subcommand '{name}'; available: {', '.join(SUBCOMMANDS)}")
        if "-h" in rest or "--help" in rest:
            print_help(name)
            return 0
        _quiet_libraries()
        tune_malloc()  # before JAX starts its threads: see datarater.hostmem
        sub = SUBCOMMANDS[name]
        program = compose(sub, rest)
        from datarater.parallel.distributed import maybe_initialize_distributed

        maybe_initialize_distributed()  # multi-host: connect the processes before any device use
        _compilation_cache()
        module, func = sub.runner.split(":")
        getattr(importlib.import_module(module), func)(program)
        return 0
    except UserError as e:
        print(f"datarater {name}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _stdout_to_devnull()
        return 141  # what a shell reports for a process stopped by SIGPIPE
    except OSError as e:
        if e.errno not in _STORAGE_ERRORS:
            raise
        # a full disk, read-only or unwritable folder met by a writer with no message of its own
        where = f"writing {e.filename}" if e.filename else "a write in the run directory failed"
        print(f"datarater {name}: error: {where}: {e.strerror or e} (free space or fix the folder's permissions, "
              "then rerun: finished files and checkpoints are kept and a rerun resumes)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"datarater {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
