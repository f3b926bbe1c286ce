"""Target sets: what a target selects, that no target document is ever trained on, bad targets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datarater.config import CorpusConfig, DataConfig, MetaConfig, TargetConfig
from datarater.data.corpus import pack_split
from datarater.data.split import assign_split
from datarater.data.target import pack_target, read_with_target, target_texts, validation_groups
from datarater.data.tokenizer import make_tokenizer
from datarater.errors import UserError
from datarater.meta.data import MetaData, in_memory

WORDS = "the river runs past old stone walls while birds sing over quiet fields of grain".split()


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """400 documents from two sources, a quarter of them labelled 'junk'."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("target") / "corpus.jsonl"
    with open(path, "w") as f:
        for i in range(400):
            label = "junk" if i % 4 == 0 else "clean"
            text = " ".join(rng.choice(WORDS, 30)) if label == "clean" else "".join(rng.choice(list("0123456789,"), 120))
            f.write(json.dumps({"id": f"d{i}", "text": text, "source": "wiki" if i % 3 else "web", "label": label}) + "\n")
    return path


def _corpus(path) -> CorpusConfig:
    return CorpusConfig(paths=[str(path)], heldout_fraction=0.2, validation_fraction=0.2)


def test_selection_comes_from_heldout_and_validation_only_and_meta_training_never_sees_it(labelled):
    corpus, tok, data = _corpus(labelled), make_tokenizer(DataConfig()), DataConfig(seq_len=32)
    target = TargetConfig(labels=["clean"], sources=["wiki"])
    r = read_with_target(corpus, tok, target, ("train", "validation"))
    ids = r.target_ids()
    expected = {f"d{i}" for i in range(400) if i % 4 and i % 3 and
                assign_split(f"d{i}", 0.2, 0.2, corpus.split_salt) in ("heldout", "validation")}
    assert ids == expected and ids
    assert {d.id for d, _ in r.target_validation} == {i for i in expected
                                                     if assign_split(i, 0.2, 0.2, corpus.split_salt) == "validation"}
    train_ids = {d.id for d, _ in r.splits["train"]}
    assert not train_ids & ids
    # every batch the inner LMs train on in meta-training, and the outer loss's batches
    train = pack_split(r.splits["train"], data, tok, "train")
    held, val = pack_target(r, data, tok)
    md = MetaData(in_memory({"train": train, "heldout": held}), MetaConfig(population=2, unroll=2, inner_batch_size=8, outer_batch_size=8))
    seen_train, seen_held = set(), set()
    for _ in range(30):
        _, hb, rows = md.next()
        for i in rows["index"].ravel():
            seen_train.update(train.row_doc_ids(int(i)))
        assert hb["tokens"].shape == (2, 8, 32)
    for i in range(len(held)):
        seen_held.update(held.row_doc_ids(i))
    assert seen_train and not seen_train & ids
    assert seen_held == {d.id for d, _ in r.target_heldout}
    groups = validation_groups(r, target)
    assert {"validation", "target", "source:web", "source:wiki", "label:clean", "label:junk"} == set(groups)
    docs = [d.id for d, _ in r.splits["validation"]]
    assert {i for i, m in zip(docs, groups["target"], strict=True) if m} == {d.id for d, _ in r.target_validation}
    assert len(target_texts(corpus, target)) == len(r.target_heldout)


def test_heldout_mode_is_the_corpus_heldout_split(labelled):
    corpus, tok = _corpus(labelled), make_tokenizer(DataConfig())
    lm_only = read_with_target(CorpusConfig(paths=[str(labelled)], heldout_fraction=0.0, validation_fraction=0.2), tok,
                               TargetConfig(), ("train", "validation"), outer=False)  # an LM needs no held-out split
    assert lm_only.target_heldout == [] and set(lm_only.splits) == {"train", "validation"}
    r = read_with_target(corpus, tok, TargetConfig(), ("train",))
    assert [d.id for d, _ in r.target_heldout] == [f"d{i}" for i in range(400)
                                                  if assign_split(f"d{i}", 0.2, 0.2, corpus.split_salt) == "heldout"]
    assert r.target_validation == [] and set(r.splits) == {"train"}


@pytest.mark.parametrize("target, match", [
    (TargetConfig(sources=["wikipedia"]), r"meta.target.sources.*\['wikipedia'\] not in the corpus.*wiki \d+"),
    (TargetConfig(labels=["pristine"]), r"meta.target.labels.*\['pristine'\] not in the corpus.*clean \d+"),
    (TargetConfig(sources=["web"], labels=["junk"]), None),
])
def test_bad_selections_are_refused_before_any_compute(labelled, tmp_path, target, match):
    corpus, tok = _corpus(labelled), make_tokenizer(DataConfig())
    if match is None:  # a real selection that is empty in one split: say which and what to raise
        corpus = CorpusConfig(paths=[str(labelled)], heldout_fraction=0.002, validation_fraction=0.2)
        match = r"meta.target.*selects no document of the corpus's held-out split"
    with pytest.raises(UserError, match=match):
        read_with_target(corpus, tok, target, ("train",))


def test_target_files_that_overlap_the_corpus_are_refused(labelled, tmp_path):
    corpus, tok = _corpus(labelled), make_tokenizer(DataConfig())
    lines = labelled.read_text().splitlines()
    same_id = tmp_path / "same_id.jsonl"
    same_id.write_text(json.dumps({"id": "d5", "text": "a new text entirely"}) + "\n")
    same_text = tmp_path / "same_text.jsonl"
    same_text.write_text(json.dumps({"id": "other", "text": json.loads(lines[7])["text"]}) + "\n")
    with pytest.raises(UserError, match="meta.target.*overlaps the training corpus: 1 of 1 target documents have the same text"):
        read_with_target(corpus, tok, TargetConfig(paths=[str(same_text)]), ("train",))
    # an equal id with another text is no leak (file ids are "<name>:<line>"): only one document, so no split
    with pytest.raises(UserError, match="gives 1 outer-loss and 0 validation|gives 0 outer-loss and 1 validation"):
        read_with_target(corpus, tok, TargetConfig(paths=[str(same_id)]), ("train",))
    fresh = tmp_path / "fresh.jsonl"
    fresh.write_text("".join(json.dumps({"id": f"t{i}", "text": f"target text number {i} " * 5}) + "\n" for i in range(50)))
    r = read_with_target(corpus, tok, TargetConfig(paths=[str(fresh)], validation_fraction=0.3), ("train",))
    assert len(r.target_heldout) + len(r.target_validation) == 50 and r.target_validation and r.target_heldout
    assert not {d.id for d, _ in r.target_validation} & {d.id for d, _ in r.target_heldout}
    assert len(target_texts(corpus, TargetConfig(paths=[str(fresh)], validation_fraction=0.3))) == len(r.target_heldout)


def test_document_nll_adds_up_to_the_validation_loss(labelled):
    """Per-document sums over one pass give the same mean as the batch evaluation, and each
    document's share is its own tokens' NLL."""
    import jax
    from flax import nnx

    from datarater.config import MeshConfig, ModelConfig
    from datarater.data.pipeline import eval_batches
    from datarater.models.transformer import CausalLM
    from datarater.parallel.mesh import make_mesh
    from datarater.train.step import document_nll, evaluate, make_eval_step, make_token_nll_step

    corpus, tok, data = _corpus(labelled), make_tokenizer(DataConfig()), DataConfig(seq_len=32)
    r = read_with_target(corpus, tok, TargetConfig(), ("validation",))
    packed = pack_split(r.splits["validation"], data, tok, "validation")
    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, d_head=16, d_ff=64)
    graphdef, params = nnx.split(CausalLM(cfg, rngs=nnx.Rngs(0)))
    mesh, rules = make_mesh(MeshConfig()), MeshConfig().rules
    nll, count = document_nll(jax.jit(make_token_nll_step(graphdef)), params, packed, 8, mesh, rules)
    want = evaluate(jax.jit(make_eval_step(graphdef)), params, eval_batches(packed, 8, 0), mesh, rules)
    assert nll.sum() / count.sum() == pytest.approx(want, rel=1e-5)
    # every document gets the tokens it has after its first (bos predicts nothing of another piece)
    pieces = np.zeros(len(packed.doc_ids))
    for i in range(len(packed)):
        seg = packed.segment_ids[i]
        for k, j in enumerate(packed.row_doc_indices(i)):
            pieces[j] += max(int((seg == k + 1).sum()) - 1, 0)
    np.testing.assert_array_equal(count, pieces)


def test_curve_groups_are_the_validation_documents_of_a_source_or_label(labelled):
    from datarater.data.target import group_documents

    r = read_with_target(_corpus(labelled), make_tokenizer(DataConfig()), TargetConfig(), ("train", "validation"))
    got = group_documents(r, TargetConfig(), ["source:web", "label:junk"])
    assert 0 < len(got["source:web"]) < len(r.splits["validation"]) and got["label:junk"]
    assert [d.id for d, _ in got["source:web"]] == [d.id for d, _ in r.splits["validation"] if d.source == "web"]
    assert [d.id for d, _ in got["label:junk"]] == [d.id for d, _ in r.splits["validation"] if d.label == "junk"]
    with pytest.raises(UserError, match=r"'source:news' is no group of the corpus's validation documents; .*source:web"):
        group_documents(r, TargetConfig(), ["source:news"])
    r.description["evaluation_sample"] = "the first 40 validation documents (5000 tokens)"  # as a streaming read says
    with pytest.raises(UserError, match=r"is no group of the first 40 validation documents"):
        group_documents(r, TargetConfig(), ["source:news"])
