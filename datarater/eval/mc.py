"""Zero-shot multiple-choice scoring with a causal LM.

Each choice is scored by the log-likelihood of its continuation tokens given its context. The
model sees windows of at most ``seq_len`` tokens (its training length), padded to fixed shapes
``[batch_size, seq_len]`` so that one compiled function serves every task:

- a request whose continuation fits (``len(continuation) <= seq_len - 1``) is one window: the
  context is truncated from the left so that context + continuation fit;
- a longer continuation is scored in windows of ``seq_len // 2`` new tokens, each preceded by
  the ``seq_len - seq_len // 2`` tokens before it, so every continuation token is scored once.

Accuracy is reported raw (highest summed log-likelihood) and length-normalised (highest
log-likelihood per UTF-8 byte of the continuation: ``acc_norm`` of lm-eval-harness / OLMES).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from datarater.data.tokenizer import Tokenizer
from datarater.eval.tasks import MCItem

Window = tuple[np.ndarray, int]  # (tokens [w <= seq_len], index of the first scored token)


def request_windows(context_ids: np.ndarray, continuation_ids: np.ndarray, seq_len: int) -> list[Window]:
    """Windows that score every continuation token once, each with as much context as fits.

    ``context_ids`` must be non-empty (a continuation token needs a token before it).
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    if len(context_ids) == 0:
        raise ValueError("the context must hold at least one token (e.g. bos)")
    full = np.concatenate([np.asarray(context_ids, np.int32), np.asarray(continuation_ids, np.int32)])
    c, n = len(context_ids), len(full)
    if n - c <= seq_len - 1:
        s = max(0, n - seq_len)
        return [(full[s:n], c - s)]
    new = seq_len // 2
    windows = []
    t = c
    while t < n:
        e = min(n, t + new)
        s = max(0, e - seq_len)
        windows.append((full[s:e], t - s))
        t = e
    return windows


def _encode_requests(
    tokenizer: Tokenizer, items: Sequence[MCItem], add_bos: bool
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """``(item index, context ids, continuation ids)`` for every choice of every item."""
    cache: dict[str, np.ndarray] = {}
    prefix = np.array([tokenizer.bos_id], np.int32)

    def context_ids(text: str) -> np.ndarray:
        if text not in cache:
            ids = tokenizer.encode(text).astype(np.int32)
            cache[text] = np.concatenate([prefix, ids]) if add_bos or ids.size == 0 else ids
        return cache[text]

    out = []
    for i, item in enumerate(items):
        for j in range(len(item.continuations)):
            ctx, cont = item.request(j)
            out.append((i, context_ids(ctx), tokenizer.encode(cont).astype(np.int32)))
    return out


@partial(jax.jit, static_argnums=0)
def _window_logliks(graphdef: nnx.GraphDef, params, tokens, segment_ids, positions, scored):
    """Sum of log p(token | previous tokens) over the tokens marked in ``scored``, per row ``[B]``."""
    logits = nnx.merge(graphdef, params)(tokens, segment_ids, positions)[:, :-1]
    logp = jax.nn.log_softmax(logits, axis=-1)
    token_logp = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(scored[:, 1:], token_logp, 0.0), axis=1)


def _batch_arrays(windows: list[Window], batch_size: int, seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
    tokens = np.full((batch_size, seq_len), pad_id, np.int32)
    segment_ids = np.zeros((batch_size, seq_len), np.int32)
    positions = np.zeros((batch_size, seq_len), np.int32)
    scored = np.zeros((batch_size, seq_len), bool)
    for r, (ids, first) in enumerate(windows):
        w = len(ids)
        tokens[r, :w] = ids
        segment_ids[r, :w] = 1
        positions[r, :w] = np.arange(w)
        scored[r, first:w] = True
    return {"tokens": tokens, "segment_ids": segment_ids, "positions": positions, "scored": scored}


def choice_loglikelihoods(
    graphdef: nnx.GraphDef,
    params,
    tokenizer: Tokenizer,
    items: Sequence[MCItem],
    seq_len: int,
    batch_size: int,
    add_bos: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """Log-likelihood (nats, float64) of each choice's continuation, one array per item.

    ``add_bos`` starts every context with the tokenizer's bos (as the LM saw documents in
    training); an empty context always gets it. ``progress(done, total)`` is called per batch.
    """
    requests = _encode_requests(tokenizer, items, add_bos)
    windows: list[Window] = []
    owner: list[int] = []
    for r, (_, ctx, cont) in enumerate(requests):
        for w in request_windows(ctx, cont, seq_len):
            windows.append(w)
            owner.append(r)
    totals = np.zeros(len(requests), np.float64)
    n_batches = -(-len(windows) // batch_size)
    for b in range(n_batches):
        chunk = windows[b * batch_size : (b + 1) * batch_size]
        arrays = _batch_arrays(chunk, batch_size, seq_len, tokenizer.pad_id)
        sums = np.asarray(_window_logliks(graphdef, params, *(jnp.asarray(arrays[k]) for k in
                                                               ("tokens", "segment_ids", "positions", "scored"))))
        np.add.at(totals, owner[b * batch_size : b * batch_size + len(chunk)], sums[: len(chunk)].astype(np.float64))
        if progress is not None:
            progress(b + 1, n_batches)
    out, k = [], 0
    for item in items:
        n = len(item.continuations)
        out.append(totals[k : k + n].copy())
        k += n
    return out


def continuation_bytes(item: MCItem) -> np.ndarray:
    """UTF-8 bytes of each continuation (the length normaliser of ``acc_norm``)."""
    return np.array([max(len(c.encode("utf-8")), 1) for c in item.continuations], np.float64)


def accuracy(items: Sequence[MCItem], loglik: Sequence[np.ndarray]) -> dict[str, float | int]:
    """``acc`` (argmax of summed log-likelihood), ``acc_norm`` (argmax per byte) and ``n`` items.

    Ties go to the first choice.
    """
    if len(items) != len(loglik):
        raise ValueError(f"{len(items)} items but {len(loglik)} log-likelihood arrays")
    if not items:
        return {"acc": float("nan"), "acc_norm": float("nan"), "n": 0}
    raw = [int(np.argmax(ll)) == it.label for it, ll in zip(items, loglik, strict=True)]
    norm = [int(np.argmax(ll / continuation_bytes(it))) == it.label for it, ll in zip(items, loglik, strict=True)]
    return {"acc": float(np.mean(raw)), "acc_norm": float(np.mean(norm)), "n": len(items)}
