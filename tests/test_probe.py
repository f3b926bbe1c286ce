"""The objective probe: its look-ahead is plain training under uniform weights, drops zero-weight rows, and reads labels right."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from datarater.config import ModelConfig, TrainConfig
from datarater.data.documents import Document
from datarater.data.packing import pack_documents
from datarater.data.tokenizer import ByteTokenizer
from datarater.meta.core import MetaProblem
from datarater.meta.probe import lookahead_loss, normalised_weights, probe, probe_targets, row_clean_fraction
from datarater.models.transformer import CausalLM
from datarater.train.optimizer import make_optimizer
from datarater.train.step import make_eval_step, make_train_step

TINY = ModelConfig(name="t", vocab_size=264, d_model=32, n_layers=1, n_heads=2, d_head=16, d_ff=64)
L, B, T = 16, 4, 3
# The meta inner step's loss (row sums weighted 1/B) is (L-1) times train-lm's mean over tokens:
# without clipping and with a tiny eps, Adam takes the same step for both.
TX = make_optimizer(TrainConfig(lr=1e-2, warmup_steps=0, steps=100, weight_decay=0.1, clip_norm=0.0, eps=1e-12))


def full_rows(rng, shape) -> dict:
    """Rows of random bytes, every position a token of one document."""
    return {
        "tokens": jnp.asarray(rng.integers(3, 259, shape), jnp.int32),
        "segment_ids": jnp.ones(shape, jnp.int32),
        "positions": jnp.broadcast_to(jnp.arange(shape[-1]), shape).astype(jnp.int32),
    }


@pytest.fixture(scope="module")
def lm():
    model = CausalLM(TINY, rngs=nnx.Rngs(0))
    graphdef, theta = nnx.split(model)[0], nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return MetaProblem(graphdef, None, TX), theta, TX.init(theta)


def test_uniform_lookahead_is_plain_training(lm):
    problem, theta, opt = lm
    rng = np.random.default_rng(0)
    batches, held = full_rows(rng, (T, B, L)), full_rows(rng, (8, L))
    got = lookahead_loss(theta, opt, batches, np.full((T, B), 1.0 / B), held, problem)

    step, evaluate = jax.jit(make_train_step(problem.lm_graphdef, TX)), jax.jit(make_eval_step(problem.lm_graphdef))
    th, st = theta, opt
    for t in range(T):
        th, st, _ = step(th, st, {k: v[t] for k, v in batches.items()})
    nll, count = evaluate(th, held)
    want = float(nll / count)
    assert got == pytest.approx(want, abs=1e-5)
    assert abs(want - float(np.divide(*evaluate(theta, held)))) > 1e-3  # the T steps did move the LM


def test_weights_are_normalised_over_valid_rows():
    batches = full_rows(np.random.default_rng(0), (2, B, L))
    batches["segment_ids"] = batches["segment_ids"].at[:, 3].set(0)  # row 3 of each batch is padding
    w = normalised_weights(jnp.asarray([[2.0, 1.0, 1.0, 5.0], [0.0, 0.0, 0.0, 1.0]]), batches)
    np.testing.assert_allclose(w, [[0.5, 0.25, 0.25, 0.0], [0.0, 0.0, 0.0, 0.0]])


def test_zero_weight_rows_are_dropped(lm):
    problem, theta, opt = lm
    rng = np.random.default_rng(1)
    batches, held = full_rows(rng, (T, B, L)), full_rows(rng, (8, L))
    weights = np.ones((T, B))
    weights[1, 2] = 0.0

    def with_new_tokens(row) -> dict:
        tokens = batches["tokens"].at[1, row].set(jnp.asarray(rng.integers(3, 259, L), jnp.int32))
        return {**batches, "tokens": tokens}

    base = lookahead_loss(theta, opt, batches, weights, held, problem)
    assert lookahead_loss(theta, opt, with_new_tokens(2), weights, held, problem) == pytest.approx(base, abs=1e-7)
    # a weighted row's tokens do count, so the equality above is not vacuous
    assert abs(lookahead_loss(theta, opt, with_new_tokens(1), weights, held, problem) - base) > 1e-5


def labelled_split(n_docs: int, seed: int):
    """Packed rows (seq_len 16) of random documents, every third labelled "bad", the rest "clean"."""
    rng = np.random.default_rng(seed)
    docs = [(Document(f"d{i}", "", f"s{i % 2}", "bad" if i % 3 == 2 else "clean"),
             rng.integers(3, 259, int(rng.integers(4, 30))).astype(np.int32)) for i in range(n_docs)]
    return pack_documents(docs, L, ByteTokenizer(), "train", add_bos=True, add_eos=True)


def test_row_clean_fraction_counts_tokens_of_good_documents():
    # with bos and eos: 12 clean, 16 bad, 20 clean, 4 clean tokens -> rows of 16 tokens:
    # [12 clean, 4 bad] [12 bad, 4 clean] [16 clean] [4 clean, 12 padding]
    docs = [(Document(f"d{i}", "", "web" if i != 3 else "wiki", lab), np.full(n, 7, np.int32))
            for i, (n, lab) in enumerate([(10, "clean"), (14, "bad"), (18, "clean"), (2, "clean")])]
    packed = pack_documents(docs, L, ByteTokenizer(), "train", add_bos=True, add_eos=True)
    np.testing.assert_allclose(row_clean_fraction(packed, lambda lab, src: lab == "clean"), [0.75, 0.25, 1.0, 1.0])
    np.testing.assert_allclose(row_clean_fraction(packed, lambda lab, src: src == "wiki"), [0.0, 0.0, 0.0, 1.0])


def test_probe_rows_and_all_good_oracle_is_uniform(lm):
    problem, theta, opt = lm
    train, held = labelled_split(40, 2), labelled_split(30, 3)
    is_clean = lambda lab, src: lab == "clean"
    targets = probe_targets(held, is_clean, rows=8, seed=0)
    frac = row_clean_fraction(held, is_clean)
    assert 0 < np.sum(frac == 1.0) < len(held)
    wholly_clean = {bytes(row) for row in held.tokens[frac == 1.0]}
    assert len(targets["clean"]["tokens"]) > 0 and len(targets["heldout"]["tokens"]) == 8
    assert all(bytes(row) in wholly_clean for row in targets["clean"]["tokens"])

    calls = []
    rows = probe(problem, theta, opt, train, targets, {"nothing": lambda lab, src: True}, ages=[2, 0], steps=2,
                 repeats=2, batch_size=B, seed=0, on_progress=lambda *a: calls.append(a))
    # progress in inner steps: 0 first, 2 to age 2, per draw 2 look-aheads (uniform, one oracle) of 2 steps each
    total = 2 + 2 * 2 * 2 * 2
    assert calls[0] == (0, total, 0) and calls[-1] == (total, total, 2)
    # one call per look-ahead, and one on reaching age 2 (so a call's work is of one kind)
    assert [c[0] for c in calls] == sorted(c[0] for c in calls) and len(calls) == 1 + 2 * 2 * 2 + 1
    assert calls[1 + 2 * 2] == (2 * 2 * 2 + 2, total, 2)  # the age-0 look-aheads, then the 2 aging steps
    assert [(r["age"], r["target"]) for r in rows] == [(0, "heldout"), (0, "clean"), (2, "heldout"), (2, "clean")]
    for r in rows:  # every document good: the oracle weights are the uniform ones
        assert r["oracle"] == pytest.approx(r["uniform"], abs=1e-6) and abs(r["delta"]) < 1e-6
    assert abs(rows[2]["uniform"] - rows[0]["uniform"]) > 1e-3  # the LM trained between the ages

    biased = probe(problem, theta, opt, train, targets, {"bad": is_clean}, ages=[0], steps=2, repeats=2, batch_size=B,
                   seed=0)
    assert biased[0]["uniform"] == pytest.approx(rows[0]["uniform"], abs=1e-6)  # the same draws
    assert abs(biased[0]["delta"]) > 1e-6 and np.isfinite(biased[0]["delta_se"])

    # several oracles in one run: each is compared with the same uniform draws, in the order given
    both = probe(problem, theta, opt, train, targets, {"bad": is_clean, "nothing": lambda lab, src: True}, ages=[0],
                 steps=2, repeats=2, batch_size=B, seed=0)
    assert [(r["rejected"], r["target"]) for r in both] == [("bad", "heldout"), ("bad", "clean"),
                                                            ("nothing", "heldout"), ("nothing", "clean")]
    assert both[0]["uniform"] == both[2]["uniform"] == pytest.approx(rows[0]["uniform"], abs=1e-6)
    assert both[0]["delta"] == pytest.approx(biased[0]["delta"], abs=1e-6) and abs(both[2]["delta"]) < 1e-6
    # the draws' own deltas: delta and its standard error are theirs, and another run has the same draws
    d = np.array(biased[0]["deltas"])
    assert len(d) == 2 and d.mean() == pytest.approx(biased[0]["delta"], abs=1e-9)
    assert np.std(d, ddof=1) / np.sqrt(2) == pytest.approx(biased[0]["delta_se"], abs=1e-9)
    assert both[0]["deltas"] == pytest.approx(biased[0]["deltas"], abs=1e-6)
    # probe.json holds no NaN (JSON has none): a diverged draw's delta is null, inside the list too
    from datarater.artifacts import json_safe
    assert json_safe([0.5, float("nan"), float("inf")]) == [0.5, None, None] and json_safe(float("nan")) is None
    assert json_safe("age") == "age" and json_safe(3) == 3
    assert json_safe([{"deltas": (float("-inf"), 1.0)}]) == [{"deltas": [None, 1.0]}]  # as probe_objective writes rows


def test_oracles_and_the_clean_target_of_the_probe_program():
    from datarater.errors import UserError
    from datarater.programs.probe import oracles_for, targets_for

    ALL = "every label but clean"

    labels = ["clean", "bad", "worse", "clean"]
    assert list(oracles_for(labels, [], each=False)) == [ALL]
    each = oracles_for(labels, ["bad"], each=True)
    assert list(each) == ["bad", "worse"]  # the asked-for oracle first, then one per label but clean
    assert [each["bad"](lab, "") for lab in ("clean", "bad", "worse")] == [True, False, True]
    assert [oracles_for(labels, [], each=True)[ALL](lab, "") for lab in ("clean", "bad", "worse")] == [True, False, False]
    with pytest.raises(UserError, match=r"probe\.reject.*\['typo'\].*labels found: \['bad', 'clean', 'worse'\]"):
        oracles_for(labels, ["bad", "typo"], each=False)
    by_source = oracles_for(["wiki", "tables", "latex"], [], each=True, by="source", keep=["wiki"])
    assert list(by_source) == ["every source but wiki", "latex", "tables"]
    assert [by_source["latex"]("clean", s) for s in ("wiki", "latex", "tables")] == [True, False, True]
    assert [by_source["every source but wiki"]("", s) for s in ("wiki", "latex")] == [True, False]

    # rejecting one kind keeps the target wholly clean: rows with another kind of junk are not in it
    rng = np.random.default_rng(4)
    docs = [(Document(f"d{i}", "", "s", ["clean", "bad", "worse"][i % 3]), rng.integers(3, 259, 20).astype(np.int32))
            for i in range(60)]
    held = pack_documents(docs, L, ByteTokenizer(), "heldout", add_bos=True, add_eos=True)
    clean = {bytes(r) for r in held.tokens[row_clean_fraction(held, lambda lab, src: lab == "clean") == 1.0]}
    picked = targets_for(held, rows=64, seed=0)["clean"]["tokens"]
    assert len(picked) == len(clean) > 0 and all(bytes(r) in clean for r in picked)


def test_the_probe_target_follows_meta_target_and_bad_settings_are_named():
    from datarater.config import TargetConfig
    from datarater.errors import UserError
    from datarater.programs.probe import target_rule

    name, is_target = target_rule(TargetConfig(sources=["wiki"]), "source")
    assert name == "target" and is_target("", "wiki") and not is_target("clean", "web")
    name, is_target = target_rule(TargetConfig(labels=["clean"]), "label")
    assert name == "clean" and is_target("clean", "web") and not is_target("bad", "web")
    assert target_rule(TargetConfig(), "label")[0] == "clean"
    with pytest.raises(UserError, match=r"probe\.by.*meta\.target\.sources"):
        target_rule(TargetConfig(), "source")
    assert target_rule(TargetConfig(paths=["x.jsonl"]), "label")[0] == "target"  # meta-training's own target rows
    with pytest.raises(UserError, match=r"probe\.by.*meta\.target selects .*labels \['clean'\]"):
        target_rule(TargetConfig(labels=["clean"]), "source")  # a labels target names no source to keep
    from datarater.programs.probe import oracles_for

    with pytest.raises(UserError, match=r"meta\.target\.sources.*\['clean'\].*keep nothing.*\['latex', 'wiki'\]"):
        oracles_for(["wiki", "latex"], [], each=False, by="source", keep=["clean"])


@pytest.mark.parametrize("key,kwargs", [("probe.ages", {"ages": []}), ("probe.ages", {"ages": [0, -5]}),
                                        ("probe.repeats", {"repeats": 0}), ("probe.heldout_rows", {"heldout_rows": 0})])
def test_probe_settings_that_give_no_row_are_refused_by_key(key, kwargs):
    from datarater.errors import UserError
    from datarater.programs.probe import check_settings

    settings = {"ages": [0, 50], "steps": 0, "repeats": 8, "heldout_rows": 256} | kwargs
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        check_settings(**settings)


def test_probe_markdown_and_plot_show_every_target_and_oracle(tmp_path):
    from datarater.eval.report.plots import plot_probe
    from datarater.programs.probe import probe_markdown

    def row(age, rejected, target, delta, se):
        return {"age": age, "rejected": rejected, "target": target, "uniform": 2.0, "oracle": None if delta is None
                else 2.0 + delta, "delta": delta, "delta_se": se}

    rows = [row(0, "all", "heldout", -0.01, 0.002), row(0, "all", "target", -0.02, 0.003),
            row(0, "tables", "heldout", 0.001, None), row(0, "tables", "target", None, None),
            row(50, "all", "heldout", -0.005, 0.001), row(50, "all", "target", 0.0, 0.0005)]
    setup = {"steps": 2, "model": "pico", "repeats": 4, "batch_size": 8, "target": "target",
             "target_rows": "meta.target's outer-loss rows: sources ['wiki']"}
    png = plot_probe(tmp_path, rows, "title")
    assert (tmp_path / png).stat().st_size > 0
    md = probe_markdown(rows, setup, png).splitlines()
    assert any("sources ['wiki']" in line for line in md) and not any("wholly clean" in line for line in md)
    at = md.index("Outer loss on `target`:")
    assert md[at + 2] == "| rejected | age 0 | age 50 |"
    assert md[at + 4] == "| all | -0.02000 ± 0.00300 | +0.00000 ± 0.00050 |"
    assert md[at + 5] == "| tables | not finite | – |"  # a null delta, and an age with no row
    heldout = md.index("Outer loss on `heldout`:")
    assert md[heldout + 5] == "| tables | +0.00100 | – |"


def test_datarater_probe_by_source_writes_rows_for_every_oracle_and_target(doc_corpus, tmp_path):
    import json

    from datarater.cli import main

    run = tmp_path / "probe"
    assert main(["probe", f"run_dir={run}", "model=pico", "corpus=files", f"corpus.paths=[{doc_corpus}]",
                 "data.seq_len=64",
                 "meta.target.sources=[inspect,typing]", "probe.by=source", "probe.each=true", "probe.reject=[logging]",
                 "probe.ages=[0,3]", "probe.repeats=2", "probe.heldout_rows=8", "meta.inner_batch_size=4"]) == 0
    got = json.loads((run / "probe.json").read_text())
    sources = sorted({d["source"] for d in map(json.loads, doc_corpus.read_text().splitlines())} - {"inspect", "typing"})
    oracles = list(dict.fromkeys(r["rejected"] for r in got["rows"]))
    assert oracles == sorted(sources, key=lambda s: s != "logging")  # the asked-for one first, then each alone
    assert len(got["rows"]) == 2 * 2 * len(sources)  # ages x targets x oracles (logging's once)
    assert {r["target"] for r in got["rows"]} == {"heldout", "target"}
    assert got["setup"]["target_rows"] == "meta.target's outer-loss rows: sources ['inspect', 'typing']"
    assert 0 < got["setup"]["good_token_share"] < 1
    md = (run / "probe.md").read_text()
    assert "sources ['inspect', 'typing']" in md and (run / "probe.png").stat().st_size > 0
    assert "](probe.png)" in md  # the plot's link resolves from probe.md itself


def test_the_report_links_the_probe_plot_from_its_own_folder(tmp_path):
    from datarater.programs.report import included_markdown

    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "probe.png").write_bytes(b"png")
    md = tmp_path / "probe" / "probe.md"
    md.write_text('## Probe\n\n![objective probe](probe.png) see [docs](https://x.org/a.md) or [up](#probe), '
                  '![again](probe.png "a title"); in code: `[x](probe.png)`\n```\n![y](probe.png)\n```\n'
                  '~~~\n![z](probe.png)\n~~~\n')
    text = included_markdown(md, tmp_path)
    link = text.split("![objective probe](")[1].split(")")[0]
    assert (tmp_path / link).read_bytes() == b"png"  # resolves from the report's folder
    assert '![again](probe/probe.png "a title")' in text
    assert "[docs](https://x.org/a.md)" in text and "[up](#probe)" in text  # absolute links and anchors kept
    assert "`[x](probe.png)`" in text and "\n![y](probe.png)\n" in text  # code is left as written
    assert "\n![z](probe.png)\n" in text
