"""Zero-shot multiple-choice scoring with a causal LM.

Each choice is scored by the log-likelihood of its continuation tokens given its context. The
model sees windows of at most ``seq_len`` tokens (its training length), padded to fixed shapes
``[batch_size, seq_len]`` so that one compiled function serves every task:

- a request whose continuation fits (``len(continuation) <= seq_len - 1``) is one window: the
  context is truncated from the left so that context + continuation fit;
- a longer continuation is scored in windows of ``seq_len // 2`` new tokens, each preceded by
  the ``seq_len - seq_len // 2`` tokens before it, so every continuation token is scored once.

Accuracy is reported as lm-evaluation-harness does: ``acc`` (highest summed log-likelihood),
``acc_norm`` (highest log-likelihood per character of the choice text) and ``acc_bytes`` (per
UTF-8 byte of it), each with its standard error (the sample standard deviation over items, over
the square root of their number: lm-eval's ``mean_stderr``).
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


def _encode_pairs(tokenizer: Tokenizer, pairs: Sequence[tuple[str, str]], add_bos: bool
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(context ids, continuation ids)`` of each ``(context, continuation)`` text pair."""
    cache: dict[str, np.ndarray] = {}
    prefix = np.array([tokenizer.bos_id], np.int32)

    def context_ids(text: str) -> np.ndarray:
        if text not in cache:
            ids = tokenizer.encode(text).astype(np.int32)
            cache[text] = np.concatenate([prefix, ids]) if add_bos or ids.size == 0 else ids
        return cache[text]

    return [(context_ids(ctx), tokenizer.encode(cont).astype(np.int32)) for ctx, cont in pairs]


@partial(jax.jit, static_argnums=0)
def _window_logliks(graphdef: nnx.GraphDef, params, tokens, segment_ids, positions, scored):
    """Per row ``[B]``: the sum of log p(token | previous tokens) over the tokens marked in ``scored``,
    and whether each of them is the argmax (greedy decoding would produce it)."""
    logits = nnx.merge(graphdef, params)(tokens, segment_ids, positions)[:, :-1]
    logp = jax.nn.log_softmax(logits, axis=-1)
    token_logp = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    greedy = jnp.argmax(logits, axis=-1) == tokens[:, 1:]
    mask = scored[:, 1:]
    return jnp.sum(jnp.where(mask, token_logp, 0.0), axis=1), jnp.all(greedy | ~mask, axis=1)


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


def request_loglikelihoods(
    graphdef: nnx.GraphDef,
    params,
    tokenizer: Tokenizer,
    pairs: Sequence[tuple[str, str]],
    seq_len: int,
    batch_size: int,
    add_bos: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Log-likelihood (nats, float64) of each ``(context, continuation)`` pair's continuation, and
    whether greedy decoding would produce it (lm-eval's ``is_greedy``).

    ``add_bos`` starts every context with the tokenizer's bos (as the LM saw documents in
    training); an empty context always gets it. ``progress(done, total)`` is called per batch.
    """
    requests = _encode_pairs(tokenizer, pairs, add_bos)
    windows: list[Window] = []
    owner: list[int] = []
    for r, (ctx, cont) in enumerate(requests):
        for w in request_windows(ctx, cont, seq_len):
            windows.append(w)
            owner.append(r)
    totals = np.zeros(len(requests), np.float64)
    greedy = np.ones(len(requests), bool)
    n_batches = -(-len(windows) // batch_size)
    for b in range(n_batches):
        chunk = windows[b * batch_size : (b + 1) * batch_size]
        arrays = _batch_arrays(chunk, batch_size, seq_len, tokenizer.pad_id)
        sums, top = _window_logliks(graphdef, params, *(jnp.asarray(arrays[k]) for k in
                                                        ("tokens", "segment_ids", "positions", "scored")))
        rows = owner[b * batch_size : b * batch_size + len(chunk)]
        np.add.at(totals, rows, np.asarray(sums)[: len(chunk)].astype(np.float64))
        np.logical_and.at(greedy, rows, np.asarray(top)[: len(chunk)])
        if progress is not None:
            progress(b + 1, n_batches)
    return totals, greedy


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
    """Log-likelihood (nats, float64) of each choice's continuation, one array per item
    (`request_loglikelihoods` of every choice's request)."""
    pairs = [item.request(j) for item in items for j in range(len(item.continuations))]
    totals, _ = request_loglikelihoods(graphdef, params, tokenizer, pairs, seq_len, batch_size, add_bos, progress)
    out, k = [], 0
    for item in items:
        n = len(item.continuations)
        out.append(totals[k : k + n].copy())
        k += n
    return out


def accuracy(items: Sequence[MCItem], loglik: Sequence[np.ndarray]) -> dict[str, float | int]:
    """``acc``, ``acc_norm`` (per character), ``acc_bytes`` (per byte), their ``*_stderr`` and ``n``.

    Ties go to the first choice. A standard error needs two items (NaN below).
    """
    from scipy.stats import sem

    if len(items) != len(loglik):
        raise ValueError(f"{len(items)} items but {len(loglik)} log-likelihood arrays")
    keys = ("acc", "acc_norm", "acc_bytes")
    if not items:
        return {**{k: float("nan") for k in keys}, **{f"{k}_stderr": float("nan") for k in keys}, "n": 0}
    hits: dict[str, list[float]] = {k: [] for k in keys}
    for it, ll in zip(items, loglik, strict=True):
        texts = it.choice_texts()
        chars = np.array([max(len(c), 1) for c in texts], np.float64)
        nbytes = np.array([max(len(c.encode("utf-8")), 1) for c in texts], np.float64)
        for k, pick in (("acc", ll), ("acc_norm", ll / chars), ("acc_bytes", ll / nbytes)):
            hits[k].append(float(int(np.argmax(pick)) == it.label))
    out: dict[str, float | int] = {k: float(np.mean(v)) for k, v in hits.items()}
    for k, v in hits.items():
        out[f"{k}_stderr"] = float(sem(v)) if len(v) > 1 else float("nan")
    out["n"] = len(items)
    return out
