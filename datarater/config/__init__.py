"""Structured configs: config groups, program configs, presets and their checks.

``from datarater.config import X`` names any group or program dataclass and any ``validate_*``
check; the submodules say where each lives: `groups` (model, corpus, data, train, mesh, meta),
`programs` (one per subcommand), `curate`, `eval` and `plan` (their groups and programs),
`presets` (``conf/model/*.yaml``) and `validate`.
"""

from datarater.config.curate import CurateConfig, FilterConfig, ScoreConfig
from datarater.config.eval import EvalConfig, EvalProgram
from datarater.config.groups import (
    CorpusConfig,
    DataConfig,
    LoggingConfig,
    MeshConfig,
    MetaConfig,
    ModelCompute,
    ModelConfig,
    TargetConfig,
    TrainConfig,
)
from datarater.config.programs import (
    ExportProgram,
    FilterProgram,
    MetaTrainProgram,
    ParamsProgram,
    ProbeConfig,
    ProbeProgram,
    QuickstartConfig,
    QuickstartProgram,
    ReportProgram,
    ScoreProgram,
    SweepConfig,
    SweepProgram,
    TrainLMProgram,
)
from datarater.config.validate import (
    check_microbatch_rows,
    validate_corpus,
    validate_data,
    validate_inner_train,
    validate_logging,
    validate_mesh,
    validate_meta,
    validate_model,
    validate_quickstart,
    validate_sweep,
    validate_target,
    validate_train,
)

__all__ = [
    "CorpusConfig", "CurateConfig", "DataConfig", "EvalConfig", "EvalProgram", "FilterConfig", "FilterProgram",
    "LoggingConfig", "MeshConfig", "MetaConfig", "MetaTrainProgram", "ModelCompute", "ModelConfig", "ParamsProgram", "ProbeConfig", "ProbeProgram",
    "ExportProgram", "QuickstartConfig", "QuickstartProgram", "ReportProgram", "ScoreConfig", "ScoreProgram", "SweepConfig",
    "SweepProgram", "TargetConfig", "TrainConfig", "TrainLMProgram", "check_microbatch_rows", "validate_corpus", "validate_data",
    "validate_inner_train", "validate_logging", "validate_mesh", "validate_meta", "validate_model", "validate_quickstart",
    "validate_sweep", "validate_target", "validate_train",
]
