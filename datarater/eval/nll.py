"""NLL (nats per token) and bits per byte of an LM on validation sets.

Bits per byte = total nats / (ln 2 x UTF-8 bytes of the tokens predicted): a predicted token
counts the bytes it stands for (special tokens count 0), so the figure compares tokenizers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import jax
import numpy as np
from flax import nnx

from datarater.config import CorpusConfig, DataConfig
from datarater.data.corpus import load_splits
from datarater.data.documents import Document, ReadStats
from datarater.data.packing import PackedSequences, pack_documents
from datarater.data.pipeline import eval_batches, pad_rows
from datarater.data.sources import iter_documents
from datarater.data.tokenizer import ByteTokenizer, Tokenizer
from datarater.errors import UserError
from datarater.models.transformer import sequence_losses
from datarater.train.step import make_eval_step

_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


@dataclass
class NLLResult:
    nats: float  # summed over predicted tokens
    tokens: int  # predicted tokens
    bytes: int  # UTF-8 bytes of the predicted tokens
    sequences: int

    @property
    def nll(self) -> float:
        """Nats per predicted token."""
        return self.nats / self.tokens if self.tokens else math.nan

    @property
    def bits_per_byte(self) -> float:
        return self.nats / (math.log(2) * self.bytes) if self.bytes else math.nan

    def as_dict(self) -> dict:
        return {"nll": self.nll, "bits_per_byte": self.bits_per_byte, "tokens": self.tokens,
                "bytes": self.bytes, "sequences": self.sequences}


def token_byte_lengths(tokenizer: Tokenizer) -> np.ndarray:
    """UTF-8 bytes each token id stands for (``int64 [vocab_size]``; special ids 0)."""
    specials = {tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id}
    lengths = np.zeros(tokenizer.vocab_size, np.int64)
    if isinstance(tokenizer, ByteTokenizer):
        lengths[ByteTokenizer.OFFSET : ByteTokenizer.OFFSET + 256] = 1
        return lengths
    sp = getattr(tokenizer, "_sp", None)
    for i in range(tokenizer.vocab_size):
        if i in specials:
            continue
        if sp is not None:
            if i >= sp.get_piece_size() or sp.is_control(i) or sp.is_unknown(i):
                continue
            piece = sp.id_to_piece(i)
            lengths[i] = 1 if _BYTE_PIECE.match(piece) else len(piece.replace("\u2581", " ").encode("utf-8"))
        else:
            lengths[i] = len(tokenizer.decode([i]).encode("utf-8"))
    return lengths


def predicted_mask(segment_ids: np.ndarray) -> np.ndarray:
    """``bool [B, T-1]``: position t+1 is predicted inside its document piece (the loss's mask)."""
    return (segment_ids[:, 1:] == segment_ids[:, :-1]) & (segment_ids[:, 1:] != 0)


def predicted_bytes(packed: PackedSequences, byte_lengths: np.ndarray) -> tuple[int, int]:
    """``(predicted tokens, their UTF-8 bytes)``."""
    mask = predicted_mask(packed.segment_ids)
    targets = packed.tokens[:, 1:]
    return int(mask.sum()), int(byte_lengths[targets[mask]].sum())


def packed_nll(eval_fn: Callable, params, packed: PackedSequences, batch_size: int, byte_lengths: np.ndarray,
               max_sequences: int = 0) -> NLLResult:
    """NLL of ``params`` on (the first ``max_sequences`` of) ``packed``.

    ``eval_fn`` is ``jax.jit(make_eval_step(graphdef))``: ``(params, batch) -> (nats, tokens)``.
    """
    if 0 < max_sequences < len(packed):
        packed = _first_rows(packed, max_sequences)
    nats = 0.0
    for batch in eval_batches(packed, batch_size, 0):
        s, _ = eval_fn(params, {k: v for k, v in batch.items() if k != "index"})
        nats += float(s)
    tokens, nbytes = predicted_bytes(packed, byte_lengths)  # the same mask as the model's loss
    return NLLResult(nats=nats, tokens=tokens, bytes=nbytes, sequences=len(packed))


def row_nats(graphdef: nnx.GraphDef, params, rows: dict[str, np.ndarray], batch_size: int,
             fn: Callable | None = None) -> np.ndarray:
    """Nats summed over each row's predicted tokens (``float64 [rows]``) of the LM ``params``.

    ``rows`` holds ``tokens``, ``segment_ids`` and ``positions``; the last batch is padded with
    all-padding rows (segment 0: nothing predicted) so one compiled shape serves every batch. Pass
    ``fn = jax.jit(make_row_loss(graphdef))`` to reuse one compilation across LMs of one shape.
    """
    fn = fn or jax.jit(make_row_loss(graphdef))
    n = len(rows["tokens"])
    out = []
    for start in range(0, n, batch_size):
        chunk = {k: np.asarray(rows[k][start : start + batch_size]) for k in ("tokens", "segment_ids", "positions")}
        pad = batch_size - len(chunk["tokens"])
        if pad:
            chunk = pad_rows(chunk, pad, pad_id=0)
        out.append(np.asarray(fn(params, chunk), np.float64)[: batch_size - pad])
    return np.concatenate(out) if out else np.zeros(0)


def make_row_loss(graphdef: nnx.GraphDef) -> Callable:
    """``(params, batch) -> [B]`` nats summed over each row's predicted tokens."""

    def row_loss(params, batch):
        return sequence_losses(nnx.merge(graphdef, params), batch)[0]

    return row_loss


def _first_rows(packed: PackedSequences, n: int) -> PackedSequences:
    """The first ``n`` rows (document bookkeeping kept consistent)."""
    end = int(packed.row_doc_start[n])
    return PackedSequences(
        tokens=packed.tokens[:n], segment_ids=packed.segment_ids[:n], positions=packed.positions[:n],
        doc_ids=packed.doc_ids, sources=packed.sources, row_doc_start=packed.row_doc_start[: n + 1],
        row_docs=packed.row_docs[:end], ids=packed.ids[:n], pad_id=packed.pad_id,
    )


def own_validation_split(corpus: CorpusConfig, data: DataConfig, tokenizer: Tokenizer,
                         on_build=None) -> tuple[PackedSequences, ReadStats]:
    """The run's own validation split (the split train-lm evaluates on; for a streamed corpus, the same
    evaluation sample: its first validation documents, ``corpus.eval_sequences`` rows); ``on_build`` as `load_splits`."""
    from datarater.data.corpus import pack_split
    from datarater.data.stream import Selection, first_documents, list_shards, wants_stream

    stats = ReadStats()
    shards = list_shards(corpus, on_build=on_build)
    if wants_stream(corpus, shards):
        docs = first_documents(corpus, Selection("validation"), corpus.eval_sequences * data.seq_len, stats,
                               tokenizer, shards)
        return pack_split(docs, data, tokenizer, "validation"), stats
    packed = load_splits(corpus, data, tokenizer, splits=("validation",), stats=stats, on_build=on_build)
    return packed["validation"], stats


def extra_validation_sets(
    patterns: list[str], corpus: CorpusConfig, data: DataConfig, tokenizer: Tokenizer
) -> tuple[dict[str, PackedSequences], ReadStats]:
    """Every document of the files named by ``patterns`` (all of them, no split), packed per source.

    The source is the record's ``corpus.source_field`` or, without one, the file's stem.
    """
    cfg = CorpusConfig(name="eval.validation", kind="files", paths=list(patterns), text_field=corpus.text_field,
                       id_field=corpus.id_field, source_field=corpus.source_field,
                       max_bad_fraction=corpus.max_bad_fraction)
    stats = ReadStats()
    by_source: dict[str, list[tuple[Document, np.ndarray]]] = {}
    try:
        for doc in iter_documents(cfg, stats):
            ids = tokenizer.encode(doc.text)
            if ids.size == 0:
                stats.drop_used("empty_after_tokenize", f"document {doc.id}")
                continue
            by_source.setdefault(doc.source, []).append((Document(doc.id, "", doc.source), ids))
    except UserError as e:
        raise UserError(f"eval.validation: {e}") from None
    if not by_source:
        raise UserError(f"eval.validation {patterns}: no documents ({stats.summary()})")
    packed = {source: pack_documents(docs, data.seq_len, tokenizer, "eval", data.add_bos, data.add_eos)
              for source, docs in sorted(by_source.items())}
    return packed, stats


def nll_of_sets(graphdef: nnx.GraphDef, params, sets: dict[str, PackedSequences], tokenizer: Tokenizer,
                batch_size: int, max_sequences: int = 0,
                progress: Callable[[str, NLLResult], None] | None = None) -> dict[str, NLLResult]:
    """NLL and bits per byte of each named set."""
    eval_fn = jax.jit(make_eval_step(graphdef))
    lengths = token_byte_lengths(tokenizer)
    out = {}
    for name, packed in sets.items():
        out[name] = packed_nll(eval_fn, params, packed, batch_size, lengths, max_sequences)
        if progress is not None:
            progress(name, out[name])
    return out
