"""Grain pipelines: deterministic shuffling, sharding by process, exact resume, eval batches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datarater.data import keys
from datarater.data.documents import Document
from datarater.data.packing import PackedSequences, pack_documents
from datarater.data.pipeline import (
    eval_batches,
    iterator_state,
    make_iterator,
    restore_iterator,
    train_batches,
)
from datarater.data.tokenizer import ByteTokenizer
from datarater.errors import UserError

SEQ = 8


def _packed(n_rows: int) -> PackedSequences:
    """Exactly ``n_rows`` full rows; token values identify the row (tokens[r] = r + 3)."""
    tok = ByteTokenizer()
    docs = [(Document(f"d{r}", "", "s"), np.full(SEQ, r + 3, np.int32)) for r in range(n_rows)]
    p = pack_documents(docs, SEQ, tok, "train", add_bos=False, add_eos=False)
    assert len(p) == n_rows
    return p


def _take(it, k: int) -> list[dict]:
    return [next(it) for _ in range(k)]


def _indices(batches: list[dict]) -> list[list[int]]:
    return [b["index"].tolist() for b in batches]


def test_batches_have_the_right_content_and_same_seed_same_order():
    p = _packed(23)
    a = _take(make_iterator(train_batches(p, 4, seed=7)), 12)
    b = _take(make_iterator(train_batches(p, 4, seed=7)), 12)
    assert _indices(a) == _indices(b)
    for batch in a:
        assert set(batch) == {"tokens", "segment_ids", "positions", "index", "doc_key", "source_key", "label_key"}
        assert batch["tokens"].shape == (4, SEQ) and batch["tokens"].dtype == np.int32
        assert batch["index"].dtype == np.int64
        np.testing.assert_array_equal(batch["tokens"], p.tokens[batch["index"]])
        np.testing.assert_array_equal(batch["positions"], p.positions[batch["index"]])
        for i, row in enumerate(batch["index"]):  # each token's keys name its document
            docs = p.row_doc_indices(int(row))
            seg = p.segment_ids[row]
            want = [keys.key(p.doc_ids[docs[s - 1]]) if s else 0 for s in seg]
            assert batch["doc_key"][i].tolist() == want
            assert {keys.name_of(k) for k in batch["source_key"][i] if k} == {p.sources[j] for j in docs}
    c = _take(make_iterator(train_batches(p, 4, seed=8)), 12)
    assert _indices(a) != _indices(c)


def test_each_epoch_covers_every_row_once_and_reshuffles():
    p = _packed(23)
    per_epoch = 23 // 5  # 4 batches; 3 rows left over each epoch
    batches = _indices(_take(make_iterator(train_batches(p, 5, seed=0)), 3 * per_epoch))
    epochs = [sum(batches[e * per_epoch : (e + 1) * per_epoch], []) for e in range(3)]
    for rows in epochs:
        assert len(rows) == len(set(rows)) == 20 and set(rows) <= set(range(23))
    assert len({tuple(rows) for rows in epochs}) == 3, "every epoch has its own order"


@pytest.mark.parametrize("count", [2, 3])
def test_process_shards_are_disjoint_and_cover_all_rows(count):
    p = _packed(24)
    shards = []
    for index in range(count):
        rows_per_process = len(range(index, 24, count))
        it = make_iterator(train_batches(p, rows_per_process // 2, seed=3, process_index=index, process_count=count))
        shards.append(set(sum(_indices(_take(it, 2)), [])))  # one full epoch of this shard
        assert len(shards[-1]) == rows_per_process
    assert set.union(*shards) == set(range(24))
    assert sum(len(s) for s in shards) == 24


def test_resume_from_saved_state_gives_the_same_batches():
    p = _packed(19)
    ds = train_batches(p, 3, seed=11)
    reference = _indices(_take(make_iterator(ds), 20))
    it = make_iterator(ds)
    _take(it, 7)
    state = json.loads(json.dumps(iterator_state(it)))
    fresh = make_iterator(train_batches(p, 3, seed=11))
    restore_iterator(fresh, state)
    assert _indices(_take(fresh, 13)) == reference[7:]
    assert _indices(_take(it, 13)) == reference[7:]


def test_too_few_rows_is_a_user_error():
    p = _packed(5)
    with pytest.raises(UserError, match=r"5 rows of 8 tokens.*batch size 6.*train\.batch_size or data\.seq_len"):
        train_batches(p, 6, seed=0)
    with pytest.raises(UserError, match=r"3 rows .* on each of 2 processes"):
        train_batches(p, 4, seed=0, process_index=0, process_count=2)


def test_eval_batches_pad_the_last_batch():
    p = _packed(10)
    batches = eval_batches(p, 4, max_batches=0)
    assert len(batches) == 3
    for b in batches:
        assert b["tokens"].shape == b["segment_ids"].shape == b["positions"].shape == (4, SEQ)
    assert sum(_indices(batches), []) == [*range(10), -1, -1]
    last = batches[-1]
    np.testing.assert_array_equal(last["tokens"][:2], p.tokens[8:10])
    assert (last["tokens"][2:] == p.pad_id).all() and (last["segment_ids"][2:] == 0).all()
    assert (last["positions"][2:] == 0).all()
    limited = eval_batches(p, 4, max_batches=2)
    assert _indices(limited) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert len(eval_batches(p, 4, max_batches=9)) == 3
