"""Config of `datarater plan` (no jax import: the CLI reads configs at start-up).

The paper's training protocol (docs/method.md, "Downstream LMs") is kept here as data, so that the plan can
use a preset's protocol batch and sequence length, and the experiment presets can be checked
against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datarater.config.groups import DataConfig, MeshConfig, MetaConfig, ModelConfig, TrainConfig
from datarater.config.validate import check_microbatch_rows
from datarater.errors import UserError


@dataclass(frozen=True)
class Protocol:
    """One row of the paper's LM training protocol."""

    steps: int
    batch_size: int
    seq_len: int
    lr: float


# docs/method.md, "Downstream LMs": size | steps | batch | seq | lr.
PAPER_PROTOCOL: dict[str, Protocol] = {
    "chinchilla_50m": Protocol(steps=5_000, batch_size=128, seq_len=2048, lr=1e-3),
    "chinchilla_150m": Protocol(steps=12_000, batch_size=128, seq_len=2048, lr=1e-3),
    "chinchilla_400m": Protocol(steps=30_000, batch_size=128, seq_len=2048, lr=1e-3),
    "chinchilla_1b": Protocol(steps=48_000, batch_size=256, seq_len=2048, lr=2e-4),
}

@dataclass
class PlanConfig:
    """What `datarater plan` compiles: device counts, and the batch shape (0 = the protocol's)."""

    devices: list[int] = field(default_factory=lambda: [8, 64, 256])
    meta: bool = True  # also plan the meta-step (rater + population of inner LMs)
    batch_size: int = 0  # LM batch; 0 = the preset's protocol batch (train.batch_size if it has none)
    seq_len: int = 0  # 0 = the preset's protocol sequence length (data.seq_len if it has none)


@dataclass
class PlanProgram:
    """`datarater plan`: compile the training step and meta-step ahead of time for device counts."""

    model: ModelConfig = field(default_factory=ModelConfig)
    rater: ModelConfig = field(default_factory=ModelConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise UserError(f"config key '{key}': {msg}")


def validate_plan(p: PlanConfig, prefix: str = "plan") -> None:
    _check(len(p.devices) > 0, f"{prefix}.devices", "is empty: give device counts, e.g. plan.devices=[8,64,256]")
    for n in p.devices:
        _check(1 <= n <= 4096, f"{prefix}.devices", f"each count must be in [1, 4096], got {n}")
    _check(p.batch_size >= 0, f"{prefix}.batch_size", f"must be >= 0 (0 = the protocol's), got {p.batch_size}")
    _check(p.seq_len == 0 or p.seq_len >= 2, f"{prefix}.seq_len", f"must be 0 (the protocol's) or >= 2, got {p.seq_len}")


def validate_plan_train(t: TrainConfig, prefix: str = "train") -> None:
    """The plan reads only ``train.microbatch_rows`` (and the optimiser); the batch is the plan's."""
    check_microbatch_rows(t.microbatch_rows, f"{prefix}.microbatch_rows")


def lm_batch_shape(prog: PlanProgram) -> tuple[int, int]:
    """``(batch, seq_len)`` of the planned LM step."""
    proto = PAPER_PROTOCOL.get(prog.model.name)
    batch = prog.plan.batch_size or (proto.batch_size if proto else prog.train.batch_size)
    seq = prog.plan.seq_len or (proto.seq_len if proto else prog.data.seq_len)
    return batch, seq
