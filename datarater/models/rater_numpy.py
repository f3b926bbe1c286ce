"""Score text with an exported DataRater using NumPy alone: no JAX, no datarater, one file to copy.

`datarater export run=META_RUN out=DIR` copies this file into ``DIR`` beside ``rater.safetensors``,
``config.json`` and the tokenizer. In a curation pipeline of your own::

    from rater_numpy import load
    rater = load("DIR")
    scores = rater.score_texts(["some document", "another one"])  # higher = keep

Needs ``numpy`` and ``safetensors`` (and ``tokenizers`` when the rater's tokenizer is not the byte
one). A document's score is the mean of its chunks' scores, each chunk ``seq_len`` tokens of
``[bos] + tokens + [eos]``: what `datarater score` computes.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

BYTE_OFFSET = 3  # byte b is id b + 3; pad, bos, eos are 0, 1, 2


def _rms(x: np.ndarray, scale: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def _rotary(x: np.ndarray, base: float) -> np.ndarray:
    """Rotary embedding on ``x [B, T, H, K]`` at positions 0..T-1, rotating the two halves of K."""
    half = x.shape[-1] // 2
    inv_freq = 1.0 / (base ** (np.arange(half, dtype=np.float32) / half))
    angle = np.arange(x.shape[1], dtype=np.float32)[:, None] * inv_freq  # [T, half]
    cos, sin = np.cos(angle)[None, :, None], np.sin(angle)[None, :, None]
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


class NumpyRater:
    """An exported rater: `score_tokens` on chunks, `score_texts` on documents."""

    def __init__(self, tensors: dict[str, np.ndarray], config: dict, tokenizer_path: str | None = None):
        self.t = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
        self.config = config
        self.model = config["model"]
        self.seq_len = int(config["seq_len"])
        self.tok_info = config["tokenizer"]
        self._hf = None
        if self.tok_info["kind"] == "hf":
            from tokenizers import Tokenizer

            self._hf = Tokenizer.from_file(tokenizer_path)

    def encode(self, text: str) -> np.ndarray:
        """A document's ids as the rater saw them: ``[bos] + tokens + [eos]`` (as trained)."""
        if self.tok_info["kind"] not in ("hf", "byte"):  # e.g. SentencePiece: score_tokens still works
            raise ValueError(f"tokenizer kind {self.tok_info['kind']!r}: encode the text with it yourself "
                             "([bos] + ids + [eos] as config.json's tokenizer says) and call score_tokens")
        if self._hf is not None:
            ids = np.asarray(self._hf.encode(text, add_special_tokens=False).ids, np.int64)
        else:
            ids = np.frombuffer(text.encode("utf-8", errors="replace"), np.uint8).astype(np.int64) + BYTE_OFFSET
        head = [self.tok_info["bos_id"]] if self.tok_info["add_bos"] else []
        tail = [self.tok_info["eos_id"]] if self.tok_info["add_eos"] else []
        return np.concatenate([np.asarray(head, np.int64), ids, np.asarray(tail, np.int64)])

    def score_tokens(self, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Scores ``[B]`` of chunks ``tokens [B, T]`` whose first ``lengths[b]`` tokens are real."""
        m, t = self.model, self.t
        b, n = tokens.shape
        valid = np.arange(n)[None, :] < np.asarray(lengths)[:, None]  # [B, T]
        allowed = (valid[:, :, None] & valid[:, None, :])[:, None]  # [B, 1, T, T]
        h_, k_ = m["n_heads"], m["d_head"]
        x = t["embed_tokens.weight"][tokens]
        for i in range(m["n_layers"]):
            p = f"layers.{i}."
            hdn = _rms(x, t[p + "input_layernorm.weight"], m["norm_eps"])
            q, k, v = (hdn @ t[f"{p}self_attn.{w}.weight"].T for w in ("q_proj", "k_proj", "v_proj"))
            q, k, v = (a.reshape(b, n, h_, k_) for a in (q, k, v))
            q, k = _rotary(q, m["rope_base"]), _rotary(k, m["rope_base"])
            s = np.einsum("bqhk,bshk->bhqs", q, k) / math.sqrt(k_)
            s = np.where(allowed, s, -1e30)
            s = np.exp(s - s.max(-1, keepdims=True))
            probs = s / s.sum(-1, keepdims=True)
            att = np.einsum("bhqs,bshk->bqhk", probs, v).reshape(b, n, h_ * k_)
            x = x + att @ t[p + "self_attn.o_proj.weight"].T
            hdn = _rms(x, t[p + "post_attention_layernorm.weight"], m["norm_eps"])
            if m["mlp"] == "swiglu":
                gate = hdn @ t[p + "mlp.gate_proj.weight"].T
                act = gate / (1.0 + np.exp(-gate)) * (hdn @ t[p + "mlp.up_proj.weight"].T)
            else:
                act = _gelu_tanh(hdn @ t[p + "mlp.in_proj.weight"].T)
            x = x + act @ t[p + "mlp.down_proj.weight"].T
        x = _rms(x, t["norm.weight"], m["norm_eps"])
        w = valid[..., None].astype(np.float32)
        pooled = (x * w).sum(1) / np.maximum(w.sum(1), 1.0)
        return pooled @ t["score.weight"] + t["score.bias"]

    def score_texts(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """One score per document: the mean of its chunk scores (NaN for an empty document)."""
        chunks, owner = [], []
        for d, text in enumerate(texts):
            ids = self.encode(text)
            for s in range(0, ids.size, self.seq_len):
                chunks.append(ids[s : s + self.seq_len])
                owner.append(d)
        scores = np.zeros(len(chunks), np.float64)
        for a in range(0, len(chunks), batch_size):
            part = chunks[a : a + batch_size]
            tokens = np.full((len(part), self.seq_len), self.tok_info["pad_id"], np.int64)
            for r, c in enumerate(part):
                tokens[r, : c.size] = c
            scores[a : a + len(part)] = self.score_tokens(tokens, np.array([c.size for c in part]))
        counts = np.bincount(owner, minlength=len(texts)) if owner else np.zeros(len(texts))
        sums = np.bincount(owner, weights=scores, minlength=len(texts)) if owner else np.zeros(len(texts))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / counts, np.nan)


def load(directory: str) -> NumpyRater:
    """The rater exported into ``directory``."""
    from safetensors.numpy import load_file

    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    if config.get("format") != "datarater-rater":
        raise ValueError(f"{directory}/config.json is not an exported DataRater (format {config.get('format')!r})")
    return NumpyRater(load_file(os.path.join(directory, "rater.safetensors")), config,
                      os.path.join(directory, "tokenizer.json"))
