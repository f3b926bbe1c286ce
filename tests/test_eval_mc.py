"""Multiple-choice scoring, NLL / bits per byte and the `datarater eval` runner."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from datarater.config import DataConfig, ModelConfig, TrainConfig
from datarater.data.documents import Document
from datarater.data.packing import pack_documents
from datarater.data.tokenizer import ByteTokenizer
from datarater.eval.mc import accuracy, choice_loglikelihoods, request_windows
from datarater.eval.nll import nll_of_sets, predicted_mask, row_nats, token_byte_lengths
from datarater.eval.tasks import MCItem
from datarater.models.transformer import CausalLM
from datarater.train.optimizer import make_optimizer
from datarater.train.step import make_train_step

TOK = ByteTokenizer()
NANO = ModelConfig()  # the nano preset's shape

TEXT = (
    "Alice keeps seven green apples in a wooden box under the stairs. "
    "Every Tuesday the baker sells warm bread to the quiet fisherman. "
    "The red kite flies above the old mill when the wind comes from the west. "
)


def split_model(cfg: ModelConfig, seed: int = 0):
    return nnx.split(CausalLM(cfg, rngs=nnx.Rngs(seed)))


@partial(jax.jit, static_argnums=0)
def _logits(graphdef, params, ids):
    n = ids.shape[1]
    return nnx.merge(graphdef, params)(ids, jnp.ones((1, n), jnp.int32), jnp.arange(n)[None])


def token_logprobs(graphdef, params, ids: np.ndarray, width: int = 64) -> np.ndarray:
    """log p(ids[t] | ids[:t]) for t = 1.., from one forward pass over the sequence alone (the reference).

    Filler tokens after it (one segment, no padding mask: the model is causal, so they cannot
    change earlier positions) keep one compiled shape.
    """
    n = len(ids)
    padded = np.concatenate([ids, np.full(width - n, 7, np.int32)]).astype(np.int32)
    logp = jax.nn.log_softmax(_logits(graphdef, params, jnp.asarray(padded[None]))[0, : n - 1], axis=-1)
    return np.asarray(jnp.take_along_axis(logp, jnp.asarray(ids[1:, None]), axis=-1)[:, 0], np.float64)


def encode_request(ctx: str, cont: str) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([[TOK.bos_id], TOK.encode(ctx)]).astype(np.int32), TOK.encode(cont)


# ---------------------------------------------------------------------------------------------
# Windows and the batched scorer against a direct computation


@pytest.mark.parametrize("seq_len", [2, 3, 8, 9])
@pytest.mark.parametrize("n_ctx, n_cont", [(1, 1), (1, 7), (5, 2), (12, 3), (3, 20), (30, 30)])
def test_windows_score_every_continuation_token_once_with_context(seq_len, n_ctx, n_cont):
    ctx, cont = np.arange(100, 100 + n_ctx), np.arange(500, 500 + n_cont)
    full = np.concatenate([ctx, cont])
    scored: list[tuple[int, int]] = []  # (absolute position, tokens of context before it)
    for window, first in request_windows(ctx, cont, seq_len):
        assert 1 <= first < len(window) <= seq_len
        start = int(np.flatnonzero(full == window[0])[0])
        assert np.array_equal(window, full[start : start + len(window)])  # a contiguous slice
        scored += [(start + i, i) for i in range(first, len(window))]
    assert sorted(p for p, _ in scored) == list(range(n_ctx, n_ctx + n_cont))  # each exactly once
    if n_cont <= seq_len - 1:  # fits: one window, the context truncated from the left
        assert len(request_windows(ctx, cont, seq_len)) == 1
        assert all(seen == min(p, seq_len - 1 - (n_ctx + n_cont - 1 - p)) for p, seen in scored)
    else:  # every token sees all there is before it, or at least half a window
        assert all(seen >= min(p, seq_len - seq_len // 2) for p, seen in scored)


def test_batched_scores_equal_a_direct_computation():
    cfg = ModelConfig(vocab_size=264, d_model=32, n_layers=2, n_heads=2, d_head=16, d_ff=64)
    graphdef, params = split_model(cfg, seed=3)
    seq_len = 16
    items = [
        MCItem("The cat", [" sat", " ran away", "!"], 0),
        MCItem("A much longer context that does not fit in sixteen tokens", [" at all", " x"], 1),  # left-truncated
        MCItem("Hi", [" a continuation far longer than the sixteen token window"], 0),  # several windows
        MCItem("", [" empty context"], 0),  # bos alone
    ]
    got = choice_loglikelihoods(graphdef, params, TOK, items, seq_len, batch_size=3)
    for item, ll in zip(items, got, strict=True):
        for j, cont in enumerate(item.continuations):
            ctx_ids, cont_ids = encode_request(item.context, cont)
            ref = 0.0
            for window, first in request_windows(ctx_ids, cont_ids, seq_len):
                ref += token_logprobs(graphdef, params, window)[first - 1 :].sum()
            assert ll[j] == pytest.approx(ref, abs=2e-4)
    # a single-window request is the whole (truncated) sequence scored once
    ctx_ids, cont_ids = encode_request(items[1].context, " at all")
    full = np.concatenate([ctx_ids, cont_ids])[-seq_len:]
    assert got[1][0] == pytest.approx(token_logprobs(graphdef, params, full)[-len(cont_ids) :].sum(), abs=2e-4)
    # the batch size (how requests share padded batches) changes nothing
    again = choice_loglikelihoods(graphdef, params, TOK, items, seq_len, batch_size=1)
    assert all(np.allclose(a, b, atol=2e-4) for a, b in zip(got, again, strict=True))


def test_accuracy_raw_per_character_and_per_byte_with_lm_evals_standard_errors():
    items = [
        MCItem("q", [" a", " abcdefghij"], 1, choices=["a", "abcdefghij"]),  # long gold: lower total, higher per char
        MCItem("q", [" a", " b"], 0),
        MCItem("q", [" a", " b", " c"], 2),
        # "éé" is 2 characters and 4 bytes: per character -1.5 loses to the gold's -1.25; per byte -0.75 beats it
        MCItem("q", [" éé", " xy"], 1, choices=["éé", "xy"]),
    ]
    loglik = [np.array([-2.0, -5.0]), np.array([-1.0, -1.0]), np.array([-3.0, -2.0, -1.0]), np.array([-3.0, -2.5])]
    # item 1: raw picks 0 (wrong), per char -1 vs -0.5 picks 1 (right); item 2: a tie goes to 0
    got = accuracy(items, loglik)
    assert (got["acc"], got["acc_norm"], got["acc_bytes"], got["n"]) == (0.75, 1.0, 0.75, 4)
    # lm-eval's mean_stderr: sample standard deviation (n - 1) over sqrt(n); for 3 hits in 4: sqrt(0.25/4)
    assert got["acc_stderr"] == pytest.approx(0.25) and got["acc_bytes_stderr"] == pytest.approx(0.25)
    assert got["acc_norm_stderr"] == 0.0


# ---------------------------------------------------------------------------------------------
# An LM that memorised a text picks the memorised continuation


@pytest.fixture(scope="module")
def memorised_lm():
    seq_len = 64
    docs = [(Document(f"d{i}", "", "s"), TOK.encode(TEXT)) for i in range(32)]
    packed = pack_documents(docs, seq_len, TOK, "train", add_bos=True, add_eos=True)
    train = TrainConfig(steps=100, batch_size=8, lr=1e-2, warmup_steps=10)
    graphdef, params = split_model(NANO, seed=0)
    params = nnx.to_pure_dict(nnx.state(nnx.merge(graphdef, params), nnx.Param))
    tx = make_optimizer(train)
    step = jax.jit(make_train_step(graphdef, tx))
    opt_state = tx.init(params)
    rng = np.random.default_rng(0)
    for _ in range(train.steps):
        rows = rng.choice(len(packed), train.batch_size, replace=False)
        batch = {k: jnp.asarray(getattr(packed, k)[rows]) for k in ("tokens", "segment_ids", "positions")}
        params, opt_state, metrics = step(params, opt_state, batch)
    assert float(metrics["loss"]) < 0.2  # memorised (from ~5.6 nats at the start)
    return graphdef, params, seq_len


def shuffled(text: str, rng) -> str:
    return "".join(rng.permutation(list(text)))


def memorised_items(rng) -> list[MCItem]:
    items = []
    for k in range(8, 170, 12):
        gold = TEXT[k : k + 16]
        wrong = [shuffled(gold, rng), TEXT[(k + 70) % 150 : (k + 70) % 150 + 16], shuffled(gold, rng)[:9]]
        label = k % 4
        items.append(MCItem(TEXT[:k], wrong[:label] + [gold] + wrong[label:], label))
    # a continuation longer than the window: scored in several windows
    items.append(MCItem(TEXT[:30], [shuffled(TEXT[30:140], rng), TEXT[30:140]], 1))
    return items


def test_the_memorised_continuation_wins(memorised_lm):
    graphdef, params, seq_len = memorised_lm
    items = memorised_items(np.random.default_rng(1))
    assert len(request_windows(*encode_request(items[-1].context, items[-1].continuations[1]), seq_len)) > 1
    loglik = choice_loglikelihoods(graphdef, params, TOK, items, seq_len, batch_size=8)
    got = accuracy(items, loglik)
    assert (got["acc"], got["acc_norm"], got["acc_bytes"], got["n"]) == (1.0, 1.0, 1.0, len(items))
    for item, ll in zip(items, loglik, strict=True):
        others = np.delete(ll, item.label)
        assert ll[item.label] > others.max() + 5.0  # by a wide margin, not by luck


# ---------------------------------------------------------------------------------------------
# NLL and bits per byte


def packed_texts(texts: list[str], seq_len: int, add_eos: bool):
    docs = [(Document(f"d{i}", "", "s"), TOK.encode(t)) for i, t in enumerate(texts)]
    return pack_documents(docs, seq_len, TOK, "validation", add_bos=True, add_eos=add_eos)


ASCII_TEXTS = [TEXT, "Short one.", "Numbers 12345 and symbols #$%&.", TEXT[::-1] * 2]


def test_bits_per_byte_is_nats_per_token_over_ln2_for_bytes():
    graphdef, params = split_model(ModelConfig(vocab_size=264, d_model=32, n_layers=1, n_heads=2, d_head=16, d_ff=64))
    packed = packed_texts(ASCII_TEXTS, 48, add_eos=False)
    res = nll_of_sets(graphdef, params, {"ascii": packed}, TOK, batch_size=4)["ascii"]
    assert res.bytes == res.tokens  # one byte per predicted token
    assert res.bits_per_byte == pytest.approx(res.nll / math.log(2), rel=1e-12)
    # the NLL itself against one unpadded forward pass per row
    nats, count = 0.0, 0
    for row, seg in zip(packed.tokens, packed.segment_ids, strict=True):
        for s in np.unique(seg[seg > 0]):
            ids = row[seg == s]
            nats -= token_logprobs(graphdef, params, ids).sum()
            count += len(ids) - 1
    assert res.tokens == count and res.nll == pytest.approx(nats / count, rel=1e-5)
    # with eos: eos predictions cost nats but stand for no byte of text
    with_eos = nll_of_sets(graphdef, params, {"a": packed_texts(ASCII_TEXTS, 48, add_eos=True)}, TOK, 4)["a"]
    assert with_eos.tokens - with_eos.bytes == len(ASCII_TEXTS)  # every document's eos is predicted
    assert with_eos.bits_per_byte == pytest.approx(with_eos.nats / math.log(2) / with_eos.bytes)


def test_row_nats_are_each_rows_own_nll_whatever_the_batching():
    graphdef, params = split_model(ModelConfig(vocab_size=264, d_model=32, n_layers=1, n_heads=2, d_head=16, d_ff=64))
    packed = packed_texts(ASCII_TEXTS, 48, add_eos=False)
    rows = {k: getattr(packed, k) for k in ("tokens", "segment_ids", "positions")}
    assert len(packed) % 3  # the last batch of 3 is padded
    got = row_nats(graphdef, params, rows, batch_size=3)
    want = []
    for row, seg in zip(packed.tokens, packed.segment_ids, strict=True):
        want.append(-sum(token_logprobs(graphdef, params, row[seg == s]).sum() for s in np.unique(seg[seg > 0])))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(row_nats(graphdef, params, rows, batch_size=len(packed)), got, rtol=1e-6)
    total = nll_of_sets(graphdef, params, {"a": packed}, TOK, batch_size=4)["a"]
    assert predicted_mask(packed.segment_ids).sum() == total.tokens
    assert got.sum() == pytest.approx(total.nats, rel=1e-5)


def test_token_byte_lengths_of_a_sentencepiece_model(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    from datarater.data.tokenizer import make_tokenizer

    lines = [f"the quick brown fox {i} jumps over the lazy dog number {i % 7}" for i in range(200)]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(tmp_path / "sp"), vocab_size=60,
                                   model_type="unigram", minloglevel=2)
    tok = make_tokenizer(DataConfig(tokenizer="sentencepiece", tokenizer_path=str(tmp_path / "sp.model")))
    lengths = token_byte_lengths(tok)
    text = "the lazy dog jumps over the quick fox"
    # every piece's bytes, plus the one space SentencePiece puts in front of the text
    assert lengths[tok.encode(text)].sum() == len(text.encode()) + 1
    assert lengths[[tok.bos_id, tok.eos_id, tok.pad_id]].sum() == 0


# ---------------------------------------------------------------------------------------------
# `datarater eval` on a train-lm run


def test_evaluate_lm_on_a_trained_run(doc_corpus, tmp_path):
    from datarater.cli import SUBCOMMANDS, compose
    from datarater.config.eval import EvalConfig, EvalProgram
    from datarater.programs.eval import run as evaluate_lm
    from datarater.programs.train_lm import run as train_lm

    run = tmp_path / "run"
    summary = train_lm(compose(SUBCOMMANDS["train-lm"], [
        "model=nano", f"corpus.paths=[{doc_corpus}]", "data.seq_len=64", "train.batch_size=8", "train.steps=10",
        "train.warmup_steps=2", "train.log_every=5", "train.eval_every=10", "train.eval_batches=0",
        "train.checkpoint_every=10", f"run_dir={run}",
    ]))
    piqa = tmp_path / "piqa.jsonl"
    piqa.write_text("".join(json.dumps({"goal": f"goal {i}", "sol1": "yes", "sol2": "no way", "label": i % 2}) + "\n"
                            for i in range(5)))
    # max_sequences caps the extra sets (the validation split has fewer rows than that)
    prog = EvalProgram(lm_run=str(run), eval=EvalConfig(tasks=[str(piqa)], validation=[str(doc_corpus)], batch_size=8,
                                                        max_sequences=150))
    results = evaluate_lm(prog)
    # the run's own validation split: the same number the trainer logged at its last step
    assert results["nll"]["validation"]["nll"] == pytest.approx(summary["final_val_nll"], rel=1e-5)
    assert results["step"] == 10 and results["nll"]["validation"]["sequences"] < 150
    sources = {json.loads(line)["source"] for line in Path(doc_corpus).read_text().splitlines()}
    assert set(results["nll"]) == {"validation"} | sources  # extra sets, one per source
    for r in results["nll"].values():
        assert r["bits_per_byte"] == pytest.approx(r["nll"] * r["tokens"] / (math.log(2) * r["bytes"]))
    task = results["tasks"]["piqa"]
    assert task["n"] == 5 and task["schema"] == "piqa" and task["chance"] == 0.5
    on_disk = json.loads((run / "eval" / "results.json").read_text())
    assert on_disk["tasks"]["piqa"]["acc"] == task["acc"]
    md = (run / "eval" / "results.md").read_text()
    assert "| piqa | piqa | 5 |" in md and "bits/byte" in md
    # the results are also one metric row at the LM's step (the trackers' input); a rerun replaces it
    from datarater.train.metrics import read_metrics

    evaluate_lm(prog)
    rows = read_metrics(run / "eval" / "metrics.jsonl")
    assert len(rows) == 1 and rows[0]["step"] == 10
    assert rows[0]["nll"]["validation"] == results["nll"]["validation"]["nll"]
    assert rows[0]["piqa"]["acc"] == task["acc"] and rows[0]["piqa"]["acc_norm"] == task["acc_norm"]
