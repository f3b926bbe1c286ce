"""Curators: anything that gives each packed sequence a score (higher = keep).

A batch is a dict of ``int32 [B, T]`` arrays ``tokens``, ``segment_ids``, ``positions`` (as
`datarater.data.pipeline` makes them, ``index`` optional). Every curator has ``name``,
``flops_per_sequence`` (inference FLOPs to score one sequence, for compute accounting; 0 for
text rules), ``needs_fit`` / ``fit(sample)`` (calibration on a sample of the
corpus: the raw model of `dsir`, the median of `perplexity` band=mid) and ``score_batch``.
`make_curator` builds one from the ``curate`` config; those reading scores from files are in
`datarater.curate.precomputed`.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Protocol, runtime_checkable

import numpy as np

from datarater.config import CorpusConfig, DataConfig, ModelConfig
from datarater.config.curate import CurateConfig
from datarater.config.groups import TargetConfig
from datarater.data.packing import PackedSequences
from datarater.data.tokenizer import Tokenizer
from datarater.errors import UserError

_BATCH_FIELDS = ("tokens", "segment_ids", "positions")
_FIT_BATCH = 64


@runtime_checkable
class Curator(Protocol):
    name: str
    flops_per_sequence: float
    needs_fit: bool

    def fit(self, sample: dict[str, np.ndarray]) -> None: ...

    def score_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray: ...


# ---------------------------------------------------------------------------------------------
# Curators


class LocalDataParallel:
    """Runs a model's batch function over this process's devices, the batch split along rows.

    Parameters are replicated on each local device; a batch whose size does not divide the
    device count is padded with padding rows (dropped from the result). Only local devices:
    every process scores its own rows, so nothing waits on other processes.
    """

    def __init__(self, fn, params: Any, devices: list | None = None):
        import jax
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        self.devices = list(devices if devices is not None else jax.local_devices())
        mesh = Mesh(np.asarray(self.devices), ("data",))
        self.rows = NamedSharding(mesh, PartitionSpec("data"))
        self.params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
        self._fn = jax.jit(fn)

    def __call__(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        import jax

        arrays = [np.asarray(batch[k], dtype=np.int32) for k in _BATCH_FIELDS]
        n = arrays[0].shape[0]
        pad = -n % len(self.devices)
        if pad:
            arrays = [np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)]) for a in arrays]
        out = self._fn(self.params, *(jax.device_put(a, self.rows) for a in arrays))
        return tuple(np.asarray(o)[:n] for o in (out if isinstance(out, tuple) else (out,)))


class DataraterCurator:
    """The meta-learned rater: one forward pass of the non-causal Transformer per sequence."""

    name = "datarater"
    needs_fit = False

    def __init__(self, rater: Any, cfg: ModelConfig, seq_len: int, devices: list | None = None):
        from flax import nnx

        from datarater.models.flops import rater_inference_flops_per_sequence

        graphdef, params = nnx.split(rater)
        self.cfg = cfg
        self._apply = LocalDataParallel(lambda p, t, s, q: nnx.merge(graphdef, p)(t, s, q), params, devices)
        self.flops_per_sequence = rater_inference_flops_per_sequence(cfg, seq_len)

    def fit(self, sample: dict[str, np.ndarray]) -> None:
        del sample

    def score_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self._apply(batch)[0].astype(np.float32)


def load_datarater(run_dir: str, tokenizer: Tokenizer, seq_len: int) -> DataraterCurator:
    """The rater of a finished meta-train run; a clear `UserError` before any work otherwise."""
    from pathlib import Path

    from datarater.artifacts import RATER_DIR
    from datarater.models.rater import load_rater

    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise UserError(f"config key 'curate.rater_run': {path} does not exist; give a meta-train run directory")
    if not (path / RATER_DIR).is_dir():
        raise UserError(
            f"config key 'curate.rater_run': {path} has no finished rater ({RATER_DIR}/ is missing): "
            "the meta-training run has not finished; run `datarater meta-train` in it to the end"
        )
    try:
        rater, cfg = load_rater(path)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - orbax/omegaconf errors all mean a broken run directory
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"config key 'curate.rater_run': the rater in {path} cannot be loaded: {first}") from None
    if cfg.vocab_size < tokenizer.vocab_size:
        raise UserError(
            f"config key 'curate.rater_run': the rater's vocabulary ({cfg.vocab_size}) is smaller than the "
            f"tokenizer's ({tokenizer.vocab_size}): it was meta-trained with another tokenizer"
        )
    return DataraterCurator(rater, cfg, seq_len)


class RandomCurator:
    """Uniform scores in [0, 1) fixed by the seed and the sequence's content (same row, same score)."""

    name = "random"
    flops_per_sequence = 0.0
    needs_fit = False

    def __init__(self, seed: int):
        self.salt = f"datarater-random-{seed}".encode()

    def fit(self, sample: dict[str, np.ndarray]) -> None:
        del sample

    def score_row(self, tokens: np.ndarray, segment_ids: np.ndarray) -> float:
        h = hashlib.blake2b(self.salt, digest_size=8)
        h.update(np.ascontiguousarray(tokens, dtype="<i4").tobytes())
        h.update(np.ascontiguousarray(segment_ids, dtype="<i4").tobytes())
        return (int.from_bytes(h.digest(), "big") >> 11) / float(1 << 53)

    def score_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        tokens, seg = np.asarray(batch["tokens"]), np.asarray(batch["segment_ids"])
        return np.asarray([self.score_row(tokens[i], seg[i]) for i in range(tokens.shape[0])], dtype=np.float32)


class PerplexityCurator:
    """Mean per-token NLL under a reference LM; keeps the low, middle or high band.

    Scores: band low ``-nll``, high ``nll``, mid ``-|nll - median|`` with the median of a corpus
    sample (`fit`) or given. A row with no predicted token gets the NLL of a uniform guess,
    ``log(vocab_size)``.
    """

    name = "perplexity"

    def __init__(self, graphdef: Any, params: Any, cfg: ModelConfig, seq_len: int, band: str,
                 median: float | None = None, devices: list | None = None):
        from flax import nnx

        from datarater.models.flops import lm_forward_flops_per_sequence
        from datarater.models.transformer import sequence_losses

        if band not in ("low", "mid", "high"):
            raise ValueError(f"band must be low, mid or high, got {band!r}")
        self.band, self.median = band, median
        self.uniform_nll = math.log(cfg.vocab_size)

        def nll(p, tokens, segment_ids, positions):
            batch = {"tokens": tokens, "segment_ids": segment_ids, "positions": positions}
            return sequence_losses(nnx.merge(graphdef, p), batch)

        self._nll = LocalDataParallel(nll, params, devices)
        self.flops_per_sequence = lm_forward_flops_per_sequence(cfg, seq_len)

    @property
    def needs_fit(self) -> bool:
        return self.band == "mid" and self.median is None

    def nll_per_token(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        total, count = (np.asarray(x, np.float64) for x in self._nll(batch))
        return np.where(count > 0, total / np.maximum(count, 1.0), self.uniform_nll)

    def fit(self, sample: dict[str, np.ndarray]) -> None:
        """Sets the median NLL of the band ``mid`` from a sample of the corpus."""
        nll = _map_rows(self.nll_per_token, sample, _FIT_BATCH)
        self.median = float(np.median(nll))

    def score_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        nll = self.nll_per_token(batch)
        if self.band == "low":
            return (-nll).astype(np.float32)
        if self.band == "high":
            return nll.astype(np.float32)
        if self.median is None:
            raise RuntimeError("PerplexityCurator(band='mid') needs fit(sample) or a median before scoring")
        return (-np.abs(nll - self.median)).astype(np.float32)


def load_perplexity(cfg: CurateConfig, data: DataConfig, tokenizer: Tokenizer, seq_len: int) -> PerplexityCurator:
    from datarater.train.load import load_lm

    try:
        loaded = load_lm(cfg.reference_run)
    except UserError as e:
        raise UserError(f"config key 'curate.reference_run': {e}") from None
    ref_data = loaded.program.data
    if (ref_data.tokenizer, ref_data.tokenizer_path) != (data.tokenizer, data.tokenizer_path):
        raise UserError(
            f"config key 'curate.reference_run': the reference LM was trained with data.tokenizer="
            f"{ref_data.tokenizer} {ref_data.tokenizer_path!r}, the corpus is read with {data.tokenizer} "
            f"{data.tokenizer_path!r}"
        )
    if loaded.program.model.vocab_size < tokenizer.vocab_size:
        raise UserError("config key 'curate.reference_run': the reference LM's vocabulary is smaller than the tokenizer's")
    return PerplexityCurator(loaded.graphdef, loaded.params, loaded.program.model, seq_len, cfg.band)


class OracleCurator:
    """The oracle (`datarater.curate.oracle`): each row's share of tokens from good documents, read
    from the batch's per-token source and label keys (training batches carry them, in memory and
    streamed); the labels are free here, which no real curator's are."""

    name = "oracle"
    needs_fit = False
    flops_per_sequence = 0.0

    def __init__(self, target: TargetConfig | None = None, packed: PackedSequences | None = None):
        from datarater.curate.oracle import GoodKeys

        self.good = GoodKeys(target, packed)

    def fit(self, sample: dict[str, np.ndarray]) -> None:
        del sample

    def score_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        if "label_key" not in batch:
            raise ValueError("the oracle needs the batch's per-token keys (datarater.data.pipeline.with_keys)")
        return self.good.share(batch["source_key"], batch["label_key"], batch["segment_ids"])


# ---------------------------------------------------------------------------------------------


def make_curator(
    cfg: CurateConfig,
    data: DataConfig,
    tokenizer: Tokenizer,
    seq_len: int,
    sample: dict[str, np.ndarray] | None = None,
    packed: PackedSequences | None = None,
    corpus: CorpusConfig | None = None,
    target: TargetConfig | None = None,
    online: bool = False,
) -> Curator | None:
    """The curator named by ``cfg.name`` (None for ``none``), with its inputs checked.

    ``sample`` (a batch dict of corpus rows, e.g. `calibration_sample`) fits curators with
    ``needs_fit``; without it the caller calls ``fit`` itself before scoring. With
    ``cfg.scores`` set (whatever the name), scores come from those side files for the rows of
    ``packed`` and are looked up by the batch's ``index``. ``corpus`` and ``target`` (the run's
    target set) feed the curators that need them: ``oracle`` (only ``online``, on training batches
    with their per-token keys; ``packed``, when given, is checked for labels), ``dsir`` and ``classifier`` (the target's outer-loss texts, when
    ``curate.target_paths`` is empty).
    """
    from datarater.curate.precomputed import is_attribute_run, load_document_scores, load_precomputed

    curator: Curator
    if cfg.name == "attributes" or (cfg.scores and is_attribute_run(cfg.scores)):
        return load_document_scores(cfg)
    if cfg.scores:
        if packed is None:
            raise UserError(f"config key 'curate.scores': {cfg.scores} holds scores per packed row of an in-memory "
                            "split, which a streamed corpus does not have: score documents instead "
                            "(`datarater score score.unit=document`), or set corpus.reader=memory")
        return load_precomputed(cfg.scores, packed, cfg)
    if cfg.name == "none":
        return None
    if cfg.name == "datarater":
        curator = load_datarater(cfg.rater_run, tokenizer, seq_len)
    elif cfg.name == "random":
        curator = RandomCurator(cfg.seed)
    elif cfg.name == "perplexity":
        curator = load_perplexity(cfg, data, tokenizer, seq_len)
    elif cfg.name == "heuristic":
        from datarater.curate.heuristic import HeuristicCurator

        curator = HeuristicCurator(tokenizer)
    elif cfg.name == "dsir":
        from datarater.curate.dsir import DsirCurator

        curator = DsirCurator(_target_texts(cfg, corpus, target)[0], tokenizer, cfg.dsir_buckets, cfg.dsir_ngrams)
    elif cfg.name == "oracle":
        if not online:
            raise UserError("config key 'curate.name': the oracle scores the rows of an LM's training split by their "
                            "documents' labels, inside train-lm and sweep; `datarater score` and `filter` cannot use it")
        curator = OracleCurator(target, packed)
    elif cfg.name == "classifier":
        from datarater.curate.classifier import ClassifierCurator

        # the pool: whole training documents; without the corpus, the calibration sample's pieces (fit)
        texts, pool = _target_texts(cfg, corpus, target, cfg.classifier_pool_docs if corpus is not None else 0)
        curator = ClassifierCurator(texts, pool if corpus is not None else None, tokenizer, seed=cfg.seed)
    else:
        raise UserError(f"config key 'curate.name': unknown curator '{cfg.name}'")
    if sample is not None and curator.needs_fit:
        curator.fit(sample)
    return curator


def _target_texts(cfg: CurateConfig, corpus: CorpusConfig | None, target: TargetConfig | None,
                  pool_docs: int = 0) -> tuple[list[str], list[str]]:
    """``(target texts, pool texts)`` for a target-modelling curator (dsir, classifier): the target is
    ``curate.target_paths`` when given, else the outer-loss documents of the run's target set; the
    pool, up to ``pool_docs`` training documents (`curator_texts`: one pass over the corpus)."""
    from datarater.data.target import curator_texts

    if cfg.target_paths:
        from datarater.curate.dsir import read_target_texts

        texts = read_target_texts(cfg.target_paths)[0]
        return texts, (curator_texts(corpus, None, pool_docs, cfg.seed)[1] if pool_docs else [])
    if corpus is None or target is None or target.mode == "heldout":
        raise UserError(f"config key 'curate.target_paths': curate={cfg.name} models a target set: give "
                        "curate.target_paths=[...] or a target (target.labels / target.sources / target.paths)")
    return curator_texts(corpus, target, pool_docs, cfg.seed, prefix="target")


def calibration_sample(packed: PackedSequences, rows: int, seed: int) -> dict[str, np.ndarray]:
    """Up to ``rows`` rows of ``packed`` drawn without replacement (seeded), as a batch dict."""
    from datarater.data.pipeline import gather_rows

    n = len(packed)
    index = np.arange(n) if rows >= n else np.sort(np.random.default_rng(seed).choice(n, rows, replace=False))
    return gather_rows(packed, index)


def score_rows(curator: Curator, rows: dict[str, np.ndarray], batch_size: int) -> np.ndarray:
    """Scores of all rows of a batch dict, in batches of ``batch_size`` (the last padded, padding dropped)."""
    return _map_rows(curator.score_batch, rows, batch_size)


def _map_rows(fn, rows: dict[str, np.ndarray], batch_size: int) -> np.ndarray:
    """``fn`` over fixed-size batches of ``rows`` (one compiled shape); one float per row."""
    n = len(rows["tokens"])
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        batch = {k: np.asarray(v[start:stop]) for k, v in rows.items()}
        missing = batch_size - (stop - start)
        if missing:
            batch = {k: np.concatenate([v, np.zeros((missing, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}
        out[start:stop] = np.asarray(fn(batch))[: stop - start]
    return out

