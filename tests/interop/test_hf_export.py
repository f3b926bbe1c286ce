"""An exported LM loads in transformers with no custom code and gives our logits and our token ids."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

INSTALL = "the interop extra is not installed: pip install torch==2.13.0 && pip install -e '.[interop]'"
torch = pytest.importorskip("torch", reason=INSTALL)
transformers = pytest.importorskip("transformers", reason=INSTALL)


def test_exported_nano_swiglu_lm_loads_as_llama_with_our_logits(swiglu_lm, tmp_path):
    from datarater.config import ExportProgram
    from datarater.data.tokenizer import ByteTokenizer
    from datarater.programs.export import run as export
    from datarater.train.load import load_lm

    out = export(ExportProgram(run=str(swiglu_lm), out=str(tmp_path / "hf")))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    assert type(model).__name__ == "LlamaForCausalLM"
    texts = ["The quick brown fox jumps over the lazy dog.", "Ünïcödé — and a second row, longer than the first one."]
    ids = [tokenizer(t)["input_ids"] for t in texts]
    assert ids == [[1] + ByteTokenizer().encode(t).tolist() for t in texts]  # bos, then bytes + 3: as trained
    n = min(len(i) for i in ids)
    batch = np.array([i[:n] for i in ids], np.int32)
    lm = load_lm(swiglu_lm).module()
    ours = np.asarray(lm(jnp.asarray(batch), jnp.ones_like(batch), jnp.broadcast_to(jnp.arange(n), batch.shape)))
    with torch.no_grad():
        theirs = model(torch.tensor(batch, dtype=torch.long)).logits.numpy()
    assert ours.shape == theirs.shape == (2, n, 264)
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)
    assert np.abs(ours).max() > 0.1  # trained logits, not a degenerate all-zero pair


def test_export_of_a_gelu_lm_is_refused_before_anything_is_written(doc_corpus, tmp_path):
    from datarater.cli import main

    code = main(["train-lm", "model=nano", f"corpus.paths=[{doc_corpus}]", "data.seq_len=32", "train.batch_size=4",
                 "train.steps=1", "train.eval_batches=0", f"run_dir={tmp_path / 'gelu'}"])
    assert code == 0
    assert main(["export", f"run={tmp_path / 'gelu'}", f"out={tmp_path / 'x'}"]) == 2
    assert not (tmp_path / "x").exists()
