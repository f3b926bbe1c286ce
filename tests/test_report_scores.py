"""The report's score table: every sweep curator scores the sampled validation rows, the oracle too
(it reads the rows' per-token keys; a `datarater score`-style call without them is refused)."""

from __future__ import annotations

import numpy as np
from flax import nnx

from datarater.config import CurateConfig, DataConfig, MetaTrainProgram, ModelConfig, SweepProgram
from datarater.config.programs import SweepConfig
from datarater.data.documents import Document
from datarater.data.packing import pack_documents
from datarater.data.tokenizer import ByteTokenizer

LABELS = ["clean", "numbers", "clean", "allcaps"] * 6


def test_the_report_scores_validation_rows_with_the_rater_random_and_the_oracle(tmp_path, monkeypatch):
    from datarater.artifacts import save_rater
    from datarater.models.rater import Rater
    from datarater.programs import report
    from datarater.rundir import save_config

    tok = ByteTokenizer()
    docs = [(Document(f"d{i}", "", "web", lab), tok.encode(("word " if lab == "clean" else "X1 ") * (4 + i % 5)))
            for i, lab in enumerate(LABELS)]
    packed = pack_documents(docs, 32, tok, "validation", True, True)
    monkeypatch.setattr("datarater.data.corpus.load_splits", lambda *a, **k: {"validation": packed})
    rater_cfg = ModelConfig(name="tiny", d_model=32, n_heads=2, d_head=16, d_ff=48, n_layers=1)
    rater_run = tmp_path / "meta"
    rater_run.mkdir()
    save_config(rater_run, MetaTrainProgram(rater=rater_cfg, data=DataConfig(seq_len=32)))
    save_rater(rater_run, nnx.to_pure_dict(nnx.state(Rater(rater_cfg, rngs=nnx.Rngs(0)), nnx.Param)))
    sweep = SweepProgram(data=DataConfig(seq_len=32), curate=CurateConfig(rater_run=str(rater_run)),
                         sweep=SweepConfig(curators=["datarater", "random", "oracle"]))
    sample = report.validation_sample(sweep, rows=10)
    table = report.score_table(sweep, tmp_path, str(rater_run), sample)
    assert set(table.curator_scores) == {"random", "oracle"} and len(table.scores) == 10
    pick = sample[2]
    share = packed.token_share(np.array([lab == "clean" for lab in LABELS]))[pick]
    np.testing.assert_allclose(table.curator_scores["oracle"], share, rtol=1e-6)  # its definition, row by row
    assert share.min() < share.max()  # rows of both kinds: the match is not of a constant
