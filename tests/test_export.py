"""`datarater export` without transformers: the SwiGLU MLP, the byte tokenizer.json, the rater's NumPy loader."""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from datarater.config import DataConfig, MetaTrainProgram, ModelConfig
from datarater.errors import UserError

SMALL = dict(d_model=32, n_heads=2, d_head=16, d_ff=48, n_layers=2)


def test_swiglu_mlp_is_silu_of_the_gate_times_up_then_down():
    from datarater.models.layers import MLP

    mlp = MLP(ModelConfig(mlp="swiglu", **SMALL), nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(2, 3, 32)).astype(np.float32)
    g, u, w = (np.asarray(mlp.w_gate[...]), np.asarray(mlp.w_in[...]), np.asarray(mlp.w_out[...]))
    gate = x @ g
    want = (gate / (1 + np.exp(-gate)) * (x @ u)) @ w
    np.testing.assert_allclose(np.asarray(mlp(jnp.asarray(x))), want, rtol=1e-5, atol=1e-6)
    assert not hasattr(MLP(ModelConfig(**SMALL), nnx.Rngs(0)), "w_gate")  # gelu presets keep their two matrices


def test_swiglu_counts_its_third_matrix_in_the_flops():
    from datarater.models.flops import lm_dense_params

    gelu, swiglu = ModelConfig(**SMALL), ModelConfig(mlp="swiglu", **SMALL)
    assert lm_dense_params(swiglu) - lm_dense_params(gelu) == SMALL["n_layers"] * 32 * 48


def test_an_unknown_mlp_and_a_gelu_llama_export_name_the_key():
    from datarater.config import validate_model
    from datarater.models.hf import check_llama_expressible

    with pytest.raises(UserError, match=r"'model.mlp'.*gelu.*swiglu"):
        validate_model(ModelConfig(mlp="relu"))
    with pytest.raises(UserError, match=r"'model.mlp' is 'gelu'.*model.mlp=swiglu"):
        check_llama_expressible(ModelConfig())


def test_the_byte_tokenizer_json_gives_byte_tokenizer_ids():
    tokenizers = pytest.importorskip("tokenizers")
    from datarater.data.tokenizer import ByteTokenizer
    from datarater.data.tokenizer_export import byte_to_unicode, byte_tokenizer_json

    assert len(set(byte_to_unicode().values())) == 256
    text = "Tab\there, naïve café — 🙂 \x00\x7f end\n"
    tok = tokenizers.Tokenizer.from_str(byte_tokenizer_json(add_bos=True))
    want = [1] + ByteTokenizer().encode(text).tolist()
    enc = tok.encode(text)
    assert enc.ids == want
    assert tok.decode(enc.ids) == text  # bos is special: skipped
    plain = tokenizers.Tokenizer.from_str(byte_tokenizer_json(add_bos=False))
    assert plain.encode(text).ids == want[1:]


def _random_rater(cfg: ModelConfig):
    from datarater.models.rater import Rater

    rater = Rater(cfg, rngs=nnx.Rngs(1))
    # norms and the bias away from their initial ones, so a transposed or dropped tensor shows
    rng = np.random.default_rng(2)
    for blk in rater.trunk.blocks:
        for norm in (blk.attn_norm, blk.mlp_norm):
            norm.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, norm.scale.shape), jnp.float32)
    rater.bias[...] = jnp.float32(0.3)
    return rater


@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
def test_the_numpy_rater_scores_chunks_as_ours(mlp):
    from datarater.models.hf import rater_config, rater_tensors
    from datarater.models.rater_numpy import NumpyRater

    cfg = ModelConfig(mlp=mlp, **SMALL)
    rater = _random_rater(cfg)
    params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(rater, nnx.Param)))
    tok = {"kind": "byte", "pad_id": 0, "bos_id": 1, "eos_id": 2, "add_bos": True, "add_eos": True}
    np_rater = NumpyRater(rater_tensors(params, cfg), rater_config(cfg, 16, tok))
    rng = np.random.default_rng(3)
    lengths = np.array([16, 9, 1, 12])
    tokens = np.where(np.arange(16)[None] < lengths[:, None], rng.integers(3, 259, (4, 16)), 0)
    seg = (np.arange(16)[None] < lengths[:, None]).astype(np.int32)
    pos = np.broadcast_to(np.arange(16), (4, 16)).astype(np.int32)
    ours = np.asarray(rater(jnp.asarray(tokens, jnp.int32), jnp.asarray(seg), jnp.asarray(pos)))
    np.testing.assert_allclose(np_rater.score_tokens(tokens, lengths), ours, rtol=1e-4, atol=1e-5)
    # a SentencePiece rater loads and scores tokens too; only encoding text is the caller's
    sp = NumpyRater(rater_tensors(params, cfg), rater_config(cfg, 16, {**tok, "kind": "sentencepiece"}))
    np.testing.assert_allclose(sp.score_tokens(tokens, lengths), ours, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="'sentencepiece': encode the text with it yourself"):
        sp.encode("text")


def test_export_of_a_rater_run_loads_and_scores_documents_as_score_does(tmp_path):
    pytest.importorskip("safetensors")
    from datarater.artifacts import save_rater
    from datarater.config import ExportProgram
    from datarater.curate.score import document_chunks
    from datarater.data.tokenizer import ByteTokenizer
    from datarater.programs.export import run as export
    from datarater.rundir import save_config

    cfg = ModelConfig(name="tiny", mlp="gelu", **SMALL)
    run = tmp_path / "meta"
    run.mkdir()
    save_config(run, MetaTrainProgram(rater=cfg, data=DataConfig(seq_len=16)))
    rater = _random_rater(cfg)
    save_rater(run, nnx.to_pure_dict(nnx.state(rater, nnx.Param)))
    out = export(ExportProgram(run=str(run), out=str(tmp_path / "out")))
    assert {p.name for p in out.iterdir()} == {"rater.safetensors", "config.json", "tokenizer.json",
                                              "tokenizer_config.json", "rater_numpy.py", "README.md"}
    sys.path.insert(0, str(out))
    try:
        from rater_numpy import load  # the copied file, as a pipeline outside the project imports it
    finally:
        sys.path.remove(str(out))
    texts = ["A short one.", "x" * 40, ""]
    got = load(str(out)).score_texts(texts, batch_size=2)
    tok = ByteTokenizer()
    docs = [np.concatenate([[1], tok.encode(t), [2]]).astype(np.int32) for t in texts]
    rows, owner = document_chunks(docs, 16, 0)
    chunk = np.asarray(rater(*(jnp.asarray(rows[k]) for k in ("tokens", "segment_ids", "positions"))))
    want = [chunk[owner == d].mean() for d in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert json.loads((out / "config.json").read_text())["format"] == "datarater-rater"
    with pytest.raises(UserError, match="already exists"):
        export(ExportProgram(run=str(run), out=str(out)))
    with pytest.raises(UserError, match="not a run directory"):
        export(ExportProgram(run=str(tmp_path), out=str(tmp_path / "out2")))
    assert not (tmp_path / "out2").exists() and len(list(tmp_path.iterdir())) == 2  # no half-written folder left
