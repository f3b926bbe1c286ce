"""Grain pipelines over packed rows: shuffled, sharded, resumable training batches; eval batches.

A training batch is a dict ``{"tokens", "segment_ids", "positions": int32 [B, L],
"index": int64 [B]}`` where ``index`` is the row index into the `PackedSequences`, plus each
token's document, source and label key (``doc_key``, ``source_key``, ``label_key``: int64
[B, L]), the fields a streamed batch (`datarater.data.stream`) carries too. Only `MODEL_FIELDS`
go to the devices (`model_inputs`).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import json
from typing import Any

import grain
import numpy as np

from datarater.data.packing import PackedSequences
from datarater.errors import UserError

_FIELDS = ("tokens", "segment_ids", "positions")
MODEL_FIELDS = _FIELDS
# Rows are in memory: one reader thread and a short buffer are enough, and keep memory small.
_READ_OPTIONS = grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)


def gather_rows(packed: PackedSequences, index: np.ndarray) -> dict[str, np.ndarray]:
    """The batch dict of rows ``index`` of ``packed``."""
    index = np.asarray(index, dtype=np.int64)
    batch = {name: getattr(packed, name)[index] for name in _FIELDS}
    batch["index"] = index
    return batch


def model_inputs(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The fields of a batch the model reads."""
    return {k: batch[k] for k in MODEL_FIELDS}


def with_keys(packed: PackedSequences, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``batch`` (rows of ``packed``, with ``index``) and each token's keys (`PackedSequences.token_keys`)."""
    return {**batch, **packed.token_keys(batch["index"])}


def shard_rows(num_rows: int, process_index: int, process_count: int) -> np.ndarray:
    """Rows of process ``process_index``: ``process_index::process_count`` (disjoint, covering)."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"need 0 <= process_index < process_count, got {process_index}, {process_count}")
    return np.arange(process_index, num_rows, process_count, dtype=np.int64)


def train_batches(
    packed: PackedSequences,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.IterDataset:
    """Infinite batches of this process's rows, reshuffled every epoch from ``seed``.

    Each epoch is a fresh permutation of the shard, cut into ``len(shard) // batch_size``
    batches (the remainder of each epoch is dropped, a different remainder every epoch).
    ``batch_size`` is per process.
    """
    if batch_size < 1:
        raise UserError(f"config key 'train.batch_size': must be a positive integer, got {batch_size}")
    rows = shard_rows(len(packed), process_index, process_count)
    if len(rows) < batch_size:
        shard = f" on each of {process_count} processes" if process_count > 1 else ""
        raise UserError(
            f"the training split has {len(rows)} rows of {packed.seq_len} tokens{shard}, fewer than "
            f"the batch size {batch_size}: lower train.batch_size or data.seq_len, or add documents "
            "(corpus.paths, or lower corpus.heldout_fraction / corpus.validation_fraction)"
        )
    ds = (
        grain.MapDataset.source(rows)
        .shuffle(seed=seed % 2**32)
        .batch(batch_size, drop_remainder=True, batch_fn=np.asarray)
        .repeat()
        .map(functools.partial(gather_rows, packed))
        .map(functools.partial(with_keys, packed))
    )
    return ds.to_iter_dataset(read_options=_READ_OPTIONS)


def mixed_batches(packed: PackedSequences, sizes: list[int], weights: list[float], batch_size: int,
                  seed: int) -> grain.IterDataset:
    """Infinite batches of ``packed``'s rows drawn part by part in proportion to ``weights``: part
    ``k`` is the next ``sizes[k]`` rows, reshuffled every epoch; Grain's mix interleaves the parts
    deterministically, so a batch holds about ``weights[k] * batch_size`` rows of part ``k``
    (a weighted target's outer loss, `datarater.data.target.target_parts`)."""
    if batch_size < 1:
        raise UserError(f"config key 'meta.outer_batch_size': must be a positive integer, got {batch_size}")
    if len(sizes) != len(weights) or sum(sizes) != len(packed) or min(sizes, default=0) < 1:
        raise ValueError(f"parts of {sizes} rows (weights {weights}) do not cover the {len(packed)} rows, one row each at least")
    starts = np.cumsum([0, *sizes])
    parts = [grain.MapDataset.source(np.arange(starts[k], starts[k + 1], dtype=np.int64)).shuffle(seed=(seed + k) % 2**32)
             .repeat().to_iter_dataset(read_options=_READ_OPTIONS) for k in range(len(sizes))]
    return (
        grain.IterDataset.mix(parts, list(weights))
        .batch(batch_size, batch_fn=np.asarray)
        .map(functools.partial(gather_rows, packed))
        .map(functools.partial(with_keys, packed))
    )


def make_iterator(ds: grain.IterDataset) -> grain.DatasetIterator:
    """A checkpointable iterator over ``ds``."""
    return iter(ds)


def _noop() -> None:
    return None


@atexit.register
def _close_iterators() -> None:
    """Stop Grain's reader threads while the interpreter can still run their cleanup: otherwise
    each prefetching iterator's ``__del__`` fails during teardown and prints a traceback."""
    for obj in gc.get_objects():
        # type(), not isinstance: isinstance also reads obj.__class__, which some objects (TFDS's
        # deprecated builder classes) answer with a warning each, about 80 lines at every exit
        if issubclass(type(obj), grain.DatasetIterator):
            with contextlib.suppress(Exception):
                obj.close()
            obj.close = _noop  # its __del__ calls close() again, after the modules are gone


_TUPLE = "__tuple__"


def _encode(obj: Any) -> Any:
    """JSON-ready form of an iterator state; tuples are marked (Grain's packing compares them with tuples)."""
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(x) for x in obj]}
    if isinstance(obj, list):
        return [_encode(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    return obj


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_TUPLE}:
            return tuple(_decode(x) for x in obj[_TUPLE])
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(x) for x in obj]
    return obj


def iterator_state(it: grain.DatasetIterator) -> dict[str, Any]:
    """The iterator's position as a JSON-serialisable dict (raises if it is not)."""
    return json.loads(json.dumps(_encode(it.get_state())))


def restore_iterator(it: grain.DatasetIterator, state: dict[str, Any]) -> None:
    """Move ``it`` to a position saved by `iterator_state` (on an iterator of the same pipeline)."""
    it.set_state(_decode(state))


def eval_batches(packed: PackedSequences, batch_size: int, max_batches: int) -> list[dict[str, np.ndarray]]:
    """The first ``max_batches * batch_size`` rows in order (all rows if ``max_batches == 0``).

    The last batch is filled with padding rows (tokens = pad id, segment_ids = positions = 0,
    index = -1) so every batch has shape [batch_size, seq_len].
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(packed) if max_batches == 0 else min(len(packed), max_batches * batch_size)
    batches = []
    for start in range(0, n, batch_size):
        index = np.arange(start, min(start + batch_size, n), dtype=np.int64)
        batch = gather_rows(packed, index)
        missing = batch_size - len(index)
        if missing:
            batch = pad_rows(batch, missing, packed.pad_id)
        batches.append(batch)
    return batches


def pad_rows(batch: dict[str, np.ndarray], missing: int, pad_id: int) -> dict[str, np.ndarray]:
    """``batch`` with ``missing`` all-padding rows appended (segment 0: nothing is predicted there)."""
    fill = {"tokens": pad_id, "segment_ids": 0, "positions": 0, "index": -1}
    out = {}
    for name, value in batch.items():
        pad = np.full((missing, *value.shape[1:]), fill[name], dtype=value.dtype)
        out[name] = np.concatenate([value, pad])
    return out
