"""Who produced a set of scores: the curator, the settings its scores depend on, and the rater or reference LM it ran.

Every score file (packed-row side files, attribute files) and every filtered corpus records its
``producer``; a rerun that would add files of another producer to a directory refuses, naming
both (``score.force=true`` redoes the stale files instead), and a consumer told which rater it
expects (``curate.rater_run`` beside ``curate.scores``) refuses scores that another rater made.

A rater is identified by a BLAKE2b digest of its parameters and the meta-train step that saved
them (``RUN/rater.json``, trusted while the digest of the files in ``RUN/rater/`` it records still
matches; else the files' digest stands in); a reference LM by its latest checkpoint step and a
digest of that step's files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datarater.artifacts import CHECKPOINT_DIR, RATER_DIR, RATER_INFO_FILE, tree_digest
from datarater.config.curate import CurateConfig
from datarater.errors import UserError
from datarater.rundir import checkpoint_steps, normal_path


def rater_identity(rater_run: str | Path) -> dict[str, Any]:
    """``{"run", "digest", "meta_step"}`` of a meta-train run's saved rater."""
    run = normal_path(rater_run)
    if not (run / RATER_DIR).is_dir():
        return {"run": str(run), "digest": None, "meta_step": None}
    files = tree_digest(run / RATER_DIR)
    saved: dict = {}
    if (run / RATER_INFO_FILE).exists():
        try:
            saved = json.loads((run / RATER_INFO_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            saved = {}
    if saved.get("files_digest") == files:  # the record is of the parameters on disk
        return {"run": str(run), "digest": saved.get("digest"), "meta_step": saved.get("meta_step")}
    return {"run": str(run), "digest": f"files-{files}", "meta_step": None}  # no record of these files


def lm_identity(lm_run: str | Path) -> dict[str, Any]:
    """``{"run", "step", "digest"}`` of a train-lm run's latest checkpoint."""
    run = normal_path(lm_run)
    steps = checkpoint_steps(run)
    if not steps:
        return {"run": str(run), "step": None, "digest": None}
    return {"run": str(run), "step": steps[-1], "digest": tree_digest(run / CHECKPOINT_DIR / str(steps[-1]))}


def producer(cfg: CurateConfig, target: Any = None) -> dict[str, Any]:
    """What made (or would make) a curator's scores: its name, the settings they depend on, and
    the identity of the model it runs. ``target`` (a `TargetConfig`) is recorded for the curators
    that model the run's target when ``curate.target_paths`` is empty (dsir, classifier, oracle)."""
    out: dict[str, Any] = {"curator": cfg.name}
    if cfg.name == "datarater":
        out["rater"] = rater_identity(cfg.rater_run)
    elif cfg.name == "perplexity":  # band=mid's median comes from a seeded calibration sample
        out.update(reference=lm_identity(cfg.reference_run), band=cfg.band, calibration_rows=cfg.calibration_rows,
                   seed=cfg.seed)
    elif cfg.name in ("random", "dsir", "classifier"):
        out["seed"] = cfg.seed
        if cfg.name != "random":
            out.update(target_paths=list(cfg.target_paths), calibration_rows=cfg.calibration_rows)
        if cfg.name == "dsir":
            out.update(buckets=cfg.dsir_buckets, ngrams=cfg.dsir_ngrams)
        if cfg.name == "classifier":
            out["pool_docs"] = cfg.classifier_pool_docs
    elif cfg.name == "attributes":
        out.update(attributes=str(normal_path(cfg.attributes)), column=cfg.attribute)
    if cfg.name in ("dsir", "classifier", "oracle") and not cfg.target_paths and target is not None:
        import dataclasses

        out["target"] = dataclasses.asdict(target)
    return out


def describe(p: dict[str, Any] | None) -> str:
    """One line naming a producer, e.g. ``datarater, rater runs/rater (digest 1a2b3c4d, meta-step 300)``."""
    if not p:
        return "an unrecorded producer (written before provenance was recorded)"
    text = str(p.get("curator", "?"))
    for key in ("rater", "reference"):
        if key in p:
            m = p[key]
            at = f"meta-step {m.get('meta_step')}" if key == "rater" else f"step {m.get('step')}"
            text += f", {key} {m.get('run')} (digest {str(m.get('digest'))[:12]}, {at})"
    rest = {k: v for k, v in p.items() if k not in ("curator", "rater", "reference")}
    return text + (f", {rest}" if rest else "")


def comparable(p: dict[str, Any] | None) -> dict[str, Any] | None:
    """``p`` without where its models live (a moved run directory is the same producer)."""
    if p is None:
        return None
    return {k: comparable(v) if isinstance(v, dict) else v for k, v in p.items() if k != "run"}


def same_producer(a: dict | None, b: dict | None) -> bool:
    return comparable(a) == comparable(b)


def check_one_producer(found: list[tuple[str, dict | None]], where: str) -> dict | None:
    """The single producer of ``found`` (``(file, producer)`` pairs); `UserError` naming two files
    of different producers if they are mixed."""
    if not found:
        return None
    first_file, first = found[0]
    for name, p in found[1:]:
        if not same_producer(p, first):
            raise UserError(f"{where} mixes scores of two producers: {first_file} by {describe(first)}; {name} by "
                            f"{describe(p)}. Rescore it with one (score.force=true) or use a new run_dir")
    return first


def check_expected_rater(found: dict | None, cfg: CurateConfig, where: str) -> None:
    """With ``curate.rater_run`` given beside ``curate.scores``: the scores must be that rater's, as it is now."""
    if not cfg.rater_run:
        return
    now = rater_identity(cfg.rater_run)
    made = (found or {}).get("rater")
    if not made or made.get("digest") != now["digest"]:
        raise UserError(f"config key 'curate.rater_run': the scores in {where} were made by {describe(found)}, "
                        f"not by the rater now in {now['run']} (digest {str(now['digest'])[:12]}, meta-step "
                        f"{now['meta_step']}): rescore with `datarater score`, or leave curate.rater_run empty "
                        "to use them as they are")
