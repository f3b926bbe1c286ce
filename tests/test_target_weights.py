"""A weighted target (``meta.target.weights``): the outer loss's batches mix its entries by weight,
the target NLL is the weighted mean of the entries' NLLs, the curators' target texts follow the
same shares, and bad weights are refused naming the key."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datarater.cli import SUBCOMMANDS, compose
from datarater.config import CorpusConfig, DataConfig, TargetConfig
from datarater.data.packing import concat_packed
from datarater.data.pipeline import iterator_state, make_iterator, restore_iterator
from datarater.data.target import outer_loss_rows, read_with_target, target_parts, validation_sets, weighted_texts
from datarater.data.tokenizer import make_tokenizer
from datarater.errors import UserError
from datarater.meta.data import in_memory

TOK = make_tokenizer(DataConfig())
DATA = DataConfig(seq_len=32)


def _write(path, prefix: str, n: int, words: str) -> str:
    rng = np.random.default_rng(len(prefix))
    vocab = words.split()
    path.write_text("".join(json.dumps({"id": f"{prefix}{i}", "text": " ".join(rng.choice(vocab, 25))}) + "\n"
                            for i in range(n)))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A corpus and two target entries of their own words: a (60 documents), b (20)."""
    d = tmp_path_factory.mktemp("weights")
    corpus = _write(d / "corpus.jsonl", "c", 200, "grain fields quiet birds over sing while walls stone")
    a = _write(d / "a.jsonl", "a", 60, "river runs past old bridges under autumn trees")
    b = _write(d / "b.jsonl", "b", 20, "def return import class lambda yield print")
    return CorpusConfig(paths=[corpus]), a, b


def test_each_target_document_knows_its_entry_and_the_outer_loss_mixes_them_by_weight(files):
    corpus, a, b = files
    r = read_with_target(corpus, TOK, TargetConfig(paths=[a, b], weights=[3, 1]), ("train",))
    assert r.weights == [0.75, 0.25]
    for docs, parts in ((r.target_heldout, r.heldout_part), (r.target_validation, r.validation_part)):
        assert [d.id[0] for d, _ in docs] == ["ab"[k] for k in parts]  # ids a*, b*: the entry they came from
    assert r.description["entries"][1]["outer_loss"] + r.description["entries"][1]["validation"] == 20
    held, (sizes, weights) = outer_loss_rows(r, DATA, TOK)
    parts = target_parts(r, DATA, TOK)
    assert sizes == [len(h) for _, h, _ in parts] and sum(sizes) == len(held)
    # an LM's target NLL reads each entry's validation rows, packed the same without its outer-loss rows
    for (w, val), (w_part, _, val_part) in zip(validation_sets(r, DATA, TOK), parts, strict=True):
        assert w == w_part and val.tokens.shape[0] > 0
        np.testing.assert_array_equal(val.tokens, val_part.tokens)
    # no row holds two entries' tokens: the first sizes[0] rows are a's documents only
    assert all(held.row_doc_ids(i)[0][0] == "a" for i in range(sizes[0]))
    assert all(doc[0] == "b" for i in range(sizes[0], len(held)) for doc in held.row_doc_ids(i))
    # meta-training's held-out stream (`in_memory` with the mix), as meta-train builds it
    it = make_iterator(in_memory({"heldout": held}, (sizes, weights))(3, 8, "heldout"))
    seen = set()
    for _ in range(max(-(-sizes[0] // 6), -(-sizes[1] // 2))):  # one epoch of each entry's rows
        batch = next(it)
        in_a = batch["index"] < sizes[0]
        assert in_a.sum() == 6  # 3:1 of a batch of 8, in every batch
        seen.update(batch["index"].tolist())
        np.testing.assert_array_equal(batch["tokens"], held.tokens[batch["index"]])
    assert seen == set(range(len(held)))  # every row of both entries is drawn
    state = iterator_state(it)
    ahead = [next(it)["index"] for _ in range(3)]
    restore_iterator(it, state)
    np.testing.assert_array_equal(np.stack([next(it)["index"] for _ in range(3)]), np.stack(ahead))


def test_the_weighted_target_nll_is_the_weighted_mean_over_entries(files):
    """With each entry weighted by its share of the validation tokens, the weighted target NLL is
    the pooled one; with other weights it moves toward the entry weighted up."""
    from flax import nnx

    from datarater.config import MeshConfig, ModelConfig
    from datarater.data.corpus import pack_split
    from datarater.models.transformer import CausalLM
    from datarater.parallel.mesh import make_mesh
    from datarater.programs.train_lm import final_nll_sets

    corpus, a, b = files
    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, d_head=16, d_ff=64)
    graphdef, params = nnx.split(CausalLM(cfg, rngs=nnx.Rngs(0)))
    mesh, rules = make_mesh(MeshConfig()), MeshConfig().rules
    corpus_val = read_with_target(corpus, TOK, TargetConfig(), ("validation",), outer=False).splits["validation"]
    splits = {"validation": pack_split(corpus_val, DATA, TOK, "validation")}

    def target_nll(target: TargetConfig, sets=None) -> tuple[float, list]:
        r = read_with_target(corpus, TOK, target, ("validation",), outer=False)
        sets = sets or validation_sets(r, DATA, TOK)
        return final_nll_sets(graphdef, params, r, target, splits, sets, 8, mesh, rules)["target"], sets

    even, sets = target_nll(TargetConfig(paths=[a, b], weights=[1, 1]))
    # the same rows as one pool: the mean over all their predicted tokens
    pooled, _ = target_nll(TargetConfig(paths=[a, b]), [(1.0, concat_packed([p for _, p in sets]))])
    # tokens predicted: all but the first of each document piece (a row's segment)
    tokens = [int((p.segment_ids > 0).sum() - p.segment_ids.max(axis=1).sum()) for _, p in sets]
    share, _ = target_nll(TargetConfig(paths=[a, b], weights=tokens))
    assert share == pytest.approx(pooled, rel=1e-6) and even != pytest.approx(pooled, rel=1e-4)
    only_a, _ = target_nll(TargetConfig(paths=[a, b], weights=[1e6, 1e-6]))
    alone, _ = target_nll(TargetConfig(paths=[a]))
    assert only_a == pytest.approx(alone, rel=1e-5)


def test_curator_texts_take_each_entry_by_its_share_of_characters():
    a, b = [f"text a{i} " * 10 for i in range(30)], [f"b{i} " * 3 for i in range(5)]
    got = weighted_texts([a, b], [1, 3], seed=0)
    chars_a = sum(len(t) for t in got if t.startswith("text"))
    chars_b = sum(len(t) for t in got if not t.startswith("text"))
    total = sum(map(len, a + b))
    assert abs(chars_a - 0.25 * total) <= max(map(len, a)) and abs(chars_b - 0.75 * total) <= max(map(len, b))
    assert set(b) <= set(got)  # the small entry is taken again from the start: all of it, repeated
    assert weighted_texts([a, b], [1, 3], seed=0) == got  # seeded


@pytest.mark.parametrize("args, match", [
    (["meta.target.weights=[1]"], r"meta.target.weights': weighs the entries of paths, and no paths"),
    (["meta.target.paths=[a.jsonl,b.jsonl]", "meta.target.weights=[1]"], r"one weight per entry .*\(2\), got 1"),
    (["meta.target.paths=[a.jsonl,b.jsonl]", "meta.target.weights=[1,0]"], r"meta.target.weights\[1\]': must be a finite number > 0"),
])
def test_bad_weights_are_refused_naming_the_key(args, match):
    with pytest.raises(UserError, match=match):
        compose(SUBCOMMANDS["meta-train"], ["corpus.paths=[x.jsonl]", *args])


def test_entries_that_share_documents_are_refused(files, tmp_path):
    corpus, a, _ = files
    again = tmp_path / "again.jsonl"
    again.write_text(open(a).read())
    with pytest.raises(UserError, match=r"meta.target.paths\[1\]'.*shares documents with meta.target.paths\[0\]"):
        read_with_target(corpus, TOK, TargetConfig(paths=[a, str(again)], weights=[1, 1]), ("train",))
