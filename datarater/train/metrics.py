"""The metrics file (``metrics.jsonl``) and the peak FLOP/s that model-FLOPs utilisation (MFU) divides by."""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Dense bf16 peak FLOP/s per chip, from the vendors' data sheets.
PEAK_FLOPS_BY_DEVICE_KIND = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
}


def measure_matmul_peak(n: int = 2048, reps: int = 5, dtype: str = "float32") -> float:
    """FLOP/s of an ``n x n`` ``jnp.dot`` in ``dtype`` on the default device (best of ``reps``)."""
    a = jnp.ones((n, n), dtype)
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        dot(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best


@functools.cache
def peak_flops_per_device() -> tuple[float, str]:
    """Peak FLOP/s of one device and where the figure comes from (measured once per process)."""
    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", "")
    for prefix, flops in PEAK_FLOPS_BY_DEVICE_KIND.items():
        if kind.startswith(prefix):
            return flops, f"table ({kind}, bf16 dense)"
    if dev.platform == "cpu":
        # All emulated CPU devices share the host's cores: the peak is the host's, once.
        return measure_matmul_peak() / jax.device_count(), "measured float32 matmul on this CPU"
    return math.nan, f"unknown device kind '{kind}'"


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray) or isinstance(v, jax.Array):
        return np.asarray(v).tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class MetricsFile:
    """Appends one JSON object per line to ``metrics.jsonl`` (process 0 only)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.enabled = jax.process_index() == 0

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            with self.path.open("a") as f:
                f.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")
        except OSError as e:  # a full disk says no file name: name it here
            from datarater.errors import UserError

            raise UserError(f"writing {self.path} failed: {e.strerror or e}; the rows written before are kept "
                            "(free space, then rerun: it resumes from the last checkpoint)") from None

    def truncate_after(self, step: int) -> int:
        """Drops rows with ``step`` greater than this one (they are recomputed after a resume)."""
        if not self.enabled or not self.path.exists():
            return 0
        keep, dropped = [], 0
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1  # a line cut short by a kill
                continue
            if isinstance(row.get("step"), int) and row["step"] > step:
                dropped += 1
            else:
                keep.append(line)
        self.path.write_text("".join(line + "\n" for line in keep))
        return dropped


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
