"""`datarater export`: a trained LM or DataRater written in Hugging Face's formats, for tools outside the project.

- a train-lm run: ``model.safetensors`` + ``config.json`` of a ``LlamaForCausalLM`` (loads with
  ``transformers.AutoModelForCausalLM.from_pretrained(OUT)``, no custom code) and the tokenizer;
- a meta-train run: ``rater.safetensors`` + ``config.json``, the tokenizer and ``rater_numpy.py``,
  a NumPy-only loader that scores text (see that file's docstring).

The export is written to a temporary folder beside ``out`` and renamed into place, so ``out`` is
either complete or absent; an existing ``out`` is never overwritten.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np

from datarater.artifacts import has_rater, read_run_section
from datarater.config import DataConfig, ExportProgram
from datarater.config.programs import EXPORT_FORMATS
from datarater.console import result, say
from datarater.errors import UserError

EXPORT_README = """# Exported from datarater

{what}

Made by `datarater export run={run} format=hf` from step {step} of that run.
"""


def _save_tensors(tensors: dict[str, np.ndarray], path: Path) -> None:
    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise UserError("config key 'format': hf needs the 'safetensors' package: pip install 'datarater[hf]'") from None
    save_file(tensors, str(path), metadata={"format": "pt"})  # "pt": what transformers expects to read


def _export_lm(run: Path, step: int, tmp: Path) -> str:
    from datarater.data.tokenizer_export import write_tokenizer
    from datarater.models.hf import check_llama_expressible, lm_to_llama
    from datarater.train.load import load_lm, read_program

    prog = read_program(run)
    check_llama_expressible(prog.model)  # before restoring anything
    loaded = load_lm(run, None if step < 0 else step)
    tok = write_tokenizer(prog.data, tmp)
    params = jax.tree.map(np.asarray, loaded.params)
    tensors, config = lm_to_llama(params, prog.model, prog.data.seq_len, tok["pad_id"], tok["bos_id"], tok["eos_id"])
    config["datarater"].update({"run": str(run), "step": loaded.step, "tokenizer": tok})
    _save_tensors(tensors, tmp / "model.safetensors")
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (tmp / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": tok["bos_id"], "eos_token_id": tok["eos_id"], "pad_token_id": tok["pad_id"]}, indent=2) + "\n")
    what = (f"A `LlamaForCausalLM` ({prog.model.name}, {sum(t.size for t in tensors.values()):,} parameters), "
            f"trained by datarater on {prog.corpus.name}. Load it with\n\n"
            "    from transformers import AutoModelForCausalLM, AutoTokenizer\n"
            "    model = AutoModelForCausalLM.from_pretrained(DIR)\n    tokenizer = AutoTokenizer.from_pretrained(DIR)\n")
    (tmp / "README.md").write_text(EXPORT_README.format(what=what, run=run, step=loaded.step))
    return f"LM {prog.model.name} at step {loaded.step}"


def _export_rater(run: Path, tmp: Path) -> str:
    from datarater.data.tokenizer_export import write_tokenizer
    from datarater.models import rater_numpy
    from datarater.models.hf import rater_config, rater_tensors
    from datarater.models.rater import load_rater

    data = read_run_section(run, "data", DataConfig)
    rater, cfg = load_rater(run)
    from flax import nnx

    params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(rater, nnx.Param)))
    tok = write_tokenizer(data, tmp)
    _save_tensors(rater_tensors(params, cfg), tmp / "rater.safetensors")
    config = {**rater_config(cfg, data.seq_len, tok), "run": str(run)}
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.copyfile(rater_numpy.__file__, tmp / "rater_numpy.py")
    what = (f"A DataRater ({cfg.name}, non-causal, {data.seq_len}-token chunks) meta-trained by datarater. "
            "Score documents with NumPy alone:\n\n"
            "    import sys; sys.path.insert(0, DIR)\n    from rater_numpy import load\n"
            "    scores = load(DIR).score_texts([\"a document\", \"another\"])  # higher = keep\n")
    (tmp / "README.md").write_text(EXPORT_README.format(what=what, run=run, step="final"))
    return f"rater {cfg.name}"


def run(prog: ExportProgram) -> Path:
    if not prog.run:
        raise UserError("config key 'run' is empty: give a train-lm or meta-train run directory, e.g. run=runs/train-lm-X")
    if prog.format not in EXPORT_FORMATS:
        raise UserError(f"config key 'format': must be one of {', '.join(EXPORT_FORMATS)}, got '{prog.format}'")
    from datarater.rundir import normal_path

    run_dir = normal_path(prog.run)  # a URL stops here with a message, not as a local "gs:" folder
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"config key 'run': {run_dir} is not a run directory (no config.yaml)")
    out = normal_path(prog.out) if prog.out else run_dir / f"export-{prog.format}"
    if out.exists():
        raise UserError(f"config key 'out': {out} already exists; remove it or give another out=")
    is_rater = has_rater(run_dir)
    if is_rater and prog.step >= 0:
        raise UserError("config key 'step': a meta-train run has one final rater; leave step unset")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        say(f"[export] {run_dir} -> {out} ({prog.format})")
        what = _export_rater(run_dir, tmp) if is_rater else _export_lm(run_dir, prog.step, tmp)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = sorted(p.name for p in out.iterdir())
    result(f"exported {what} to {out}: {', '.join(files)}")
    return out
