"""Remote paths through fsspec's in-memory filesystem: a train-lm run at memory:// saves, resumes on a
fresh machine and reads its corpus, task files and tokenizer from URLs; the mirror keeps the URL an
exact copy of the finished files."""

from __future__ import annotations

import json
import shutil

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from datarater.errors import UserError
from datarater.remote import Mirror, fetch, is_url


@pytest.fixture
def memfs(tmp_path, monkeypatch):
    monkeypatch.setenv("DATARATER_STAGING", str(tmp_path / "staging"))
    fs = fsspec.filesystem("memory")
    yield fs
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")


def test_urls_and_local_paths():
    assert is_url("gs://b/run") and is_url("memory://x") and not is_url("file:///tmp/x") and not is_url("runs/x")


def test_the_mirror_uploads_changes_removes_what_the_run_removed_and_skips_partial_saves(memfs):
    m = Mirror("memory://runs/a")
    assert m.pull() == 0  # nothing there yet: an empty staging folder
    (m.local / "checkpoints" / "2").mkdir(parents=True)
    (m.local / "checkpoints" / "2" / "data").write_text("two")
    (m.local / "config.yaml").write_text("a: 1\n")
    (m.local / "checkpoints" / "4.orbax-checkpoint-tmp-1").mkdir()
    (m.local / "checkpoints" / "4.orbax-checkpoint-tmp-1" / "data").write_text("half")
    assert m.push() == 2
    assert sorted(memfs.find("/runs/a")) == ["/runs/a/checkpoints/2/data", "/runs/a/config.yaml"]
    assert m.push() == 0  # nothing changed: nothing uploaded
    shutil.rmtree(m.local / "checkpoints" / "2")  # a rotated checkpoint
    (m.local / "metrics.jsonl").write_text("{}\n")
    assert m.push() == 1
    assert sorted(memfs.find("/runs/a")) == ["/runs/a/config.yaml", "/runs/a/metrics.jsonl"]
    (m.local / "stray").write_text("not at the URL")  # as a failed push leaves it: never sent, never thrown away
    again = Mirror("memory://runs/a")
    assert again.pull() == 0 and again.resent == 1 and memfs.cat("/runs/a/stray") == b"not at the URL"
    (m.local / "stray").unlink()
    (m.local / "config.yaml").write_text("changed since\n")
    m.push()
    (m.local / "config.yaml").write_text("a: 1\n")  # then rewritten: pull reports it too, so push it back
    m.push()
    assert Mirror("memory://runs/a").pull() == 2  # exactly what the URL holds
    assert sorted(p.name for p in m.local.iterdir() if not p.name.startswith(".")) == ["config.yaml", "metrics.jsonl"]


def test_fetch_copies_a_file_once_and_names_a_missing_one(memfs):
    memfs.pipe("/data/t.jsonl", b"abc")
    local = fetch("memory://data/t.jsonl", "eval.tasks")
    assert open(local, "rb").read() == b"abc" and fetch("memory://data/t.jsonl", "eval.tasks") == local
    memfs.pipe("/data/t.jsonl", b"xyz")  # rewritten, the same size: a new version, so a new copy
    assert open(fetch("memory://data/t.jsonl", "eval.tasks"), "rb").read() == b"xyz"
    with pytest.raises(UserError, match=r"'eval.tasks'.*memory://data/none.jsonl' does not exist"):
        fetch("memory://data/none.jsonl", "eval.tasks")


def test_a_task_file_at_a_url_read_with_a_limit_counts_the_whole_file(memfs):
    from datarater.eval.accuracy import _items_in_file
    from datarater.eval.tasks import load_task

    item = {"goal": "g", "sol1": "a", "sol2": "b", "label": 0}
    memfs.pipe("/data/piqa.jsonl", ("\n".join(json.dumps(item) for _ in range(5)) + "\n").encode())
    task = load_task("memory://data/piqa.jsonl", limit=2)
    assert len(task.items) == 2 and task.path == "memory://data/piqa.jsonl"
    assert _items_in_file(task) == 5  # lm-eval's "original" count: read from the local copy, not the URL


def test_a_program_without_url_support_refuses_one_rather_than_writing_a_local_memory_folder(tmp_path, monkeypatch):
    from datarater.rundir import normal_path

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="takes a local run directory"):
        normal_path("memory://sweep")
    assert normal_path("file:///tmp/x") == normal_path("/tmp/x")
    assert list(tmp_path.iterdir()) == []


def test_train_lm_at_memory_saves_resumes_on_a_fresh_machine_and_reads_urls(doc_corpus, memfs, tmp_path, capfd):
    from datarater.cli import SUBCOMMANDS, compose
    from datarater.eval.tasks import load_task
    from datarater.programs.train_lm import run as train_lm
    from datarater.train.metrics import read_metrics

    memfs.pipe("/data/corpus.jsonl", open(doc_corpus, "rb").read())
    memfs.pipe("/data/piqa.jsonl", (json.dumps({"goal": "g", "sol1": "a", "sol2": "b", "label": 1}) + "\n").encode())

    def args(run_dir):
        return ["model=nano", "corpus.paths=[memory://data/corpus.jsonl]", "data.seq_len=32", "train.batch_size=4",
                "train.steps=6", "train.warmup_steps=2", "train.log_every=1", "train.eval_every=3",
                "train.eval_batches=1", "train.checkpoint_every=2", "train.keep_checkpoints=5", f"run_dir={run_dir}"]

    straight = train_lm(compose(SUBCOMMANDS["train-lm"], args(tmp_path / "local")))
    remote = train_lm(compose(SUBCOMMANDS["train-lm"], args("memory://runs/lm")))
    assert remote["final_val_nll"] == straight["final_val_nll"]  # the corpus read through fsspec is the same
    assert remote["run_dir"] == "memory://runs/lm" and remote["staging"].startswith(str(tmp_path / "staging"))
    held = set(memfs.find("/runs/lm"))
    assert {"/runs/lm/config.yaml", "/runs/lm/metrics.jsonl", "/runs/lm/summary.json"} <= held
    assert "run_dir: memory://runs/lm\n" in memfs.cat_file("/runs/lm/config.yaml").decode()  # not the staging path
    assert {p.split("/")[4] for p in held if p.startswith("/runs/lm/checkpoints/")} == {"2", "4", "6"}
    # a run killed after its step-4 checkpoint, resumed on a machine without the staging folder
    for p in [p for p in held if p.startswith(("/runs/lm/checkpoints/6/", "/runs/lm/summary.json"))]:
        memfs.rm_file(p)
    shutil.rmtree(tmp_path / "staging")
    capfd.readouterr()
    resumed = train_lm(compose(SUBCOMMANDS["train-lm"], args("memory://runs/lm")))
    assert "resumed from step 4" in capfd.readouterr().err
    assert resumed["final_val_nll"] == straight["final_val_nll"]
    rows = read_metrics(tmp_path / "local" / "metrics.jsonl")
    memfs.get_file("/runs/lm/metrics.jsonl", str(tmp_path / "remote.jsonl"))
    again = read_metrics(tmp_path / "remote.jsonl")
    assert [r.get("loss") for r in again] == [r.get("loss") for r in rows]  # steps 5-6 recomputed, equal
    task = load_task("memory://data/piqa.jsonl")
    assert task.name == "piqa" and task.items[0].label == 1 and task.path == "memory://data/piqa.jsonl"


def test_an_hf_tokenizer_folder_at_a_url(memfs):
    pytest.importorskip("tokenizers")
    from datarater.config import DataConfig
    from datarater.data.tokenizer import ByteTokenizer, make_tokenizer
    from datarater.data.tokenizer_export import byte_tokenizer_json

    memfs.pipe("/tok/tokenizer.json", byte_tokenizer_json(add_bos=False).encode())
    memfs.pipe("/tok/tokenizer_config.json", json.dumps({"pad_token": "<pad>", "bos_token": "<s>",
                                                         "eos_token": "</s>"}).encode())
    tok = make_tokenizer(DataConfig(tokenizer="hf", tokenizer_path="memory://tok"))
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert tok.encode("héllo").tolist() == ByteTokenizer().encode("héllo").tolist()
    with pytest.raises(UserError, match="memory://nowhere/tokenizer.json' does not exist"):
        make_tokenizer(DataConfig(tokenizer="hf", tokenizer_path="memory://nowhere"))


def test_meta_train_at_memory_leaves_its_rater_there(doc_corpus, memfs, tmp_path):
    from datarater.cli import SUBCOMMANDS, compose
    from datarater.models.rater import load_rater
    from datarater.programs.meta_train import run as meta_train

    small = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.d_head=16", "model.d_ff=64",
             "rater.d_model=32", "rater.n_layers=1", "rater.n_heads=2", "rater.d_head=16", "rater.d_ff=64",
             "data.seq_len=32", "meta.inner_batch_size=4", "meta.outer_batch_size=4", "meta.population=2",
             "corpus.heldout_fraction=0.2", "meta.steps=2", "meta.log_every=1", f"corpus.paths=[{doc_corpus}]"]
    summary = meta_train(compose(SUBCOMMANDS["meta-train"], [*small, "run_dir=memory://runs/meta"]))
    held = set(memfs.find("/runs/meta"))
    assert {"/runs/meta/config.yaml", "/runs/meta/rater.json", "/runs/meta/summary.json"} <= held
    assert summary["run_dir"] == "memory://runs/meta" and summary["staging"].startswith(str(tmp_path / "staging"))
    assert "run_dir: memory://runs/meta\n" in memfs.cat_file("/runs/meta/config.yaml").decode()
    assert any(p.startswith("/runs/meta/rater/") for p in held)
    shutil.rmtree(tmp_path / "staging")  # another machine: the rater comes back from the URL alone
    local = Mirror("memory://runs/meta")
    local.pull()
    rater, cfg = load_rater(local.local)
    assert cfg.d_model == 32 and json.loads((local.local / "rater.json").read_text())["digest"]


class Unreachable(MemoryFileSystem):
    """The memory filesystem, with its network down: every call raises, as gcsfs/s3fs do offline."""

    protocol = "unreachable"
    down = True

    @classmethod
    def _strip_protocol(cls, path):
        return MemoryFileSystem._strip_protocol(str(path).replace("unreachable://", "memory://", 1))

    def __getattribute__(self, name):
        attr = super().__getattribute__(name)
        if name in ("info", "exists", "find", "get_file", "put_file", "makedirs", "rm_file") and Unreachable.down:
            def fail(*a, **k):
                raise ConnectionError("Cannot connect to host storage.example:443")
            return fail
        return attr


@pytest.fixture
def unreachable(memfs):
    fsspec.register_implementation("unreachable", Unreachable, clobber=True)
    Unreachable.down = True
    yield memfs  # the same store as memory:// (class-level), reached when `down` is False
    Unreachable.down = False


def test_an_unreachable_url_is_one_message_naming_the_key_and_a_failed_push_is_sent_later(unreachable, tmp_path):
    from datarater.remote import fetch_folder

    for call, key in ((lambda: fetch("unreachable://data/t.jsonl", "eval.tasks"), "eval.tasks"),
                      (lambda: fetch_folder("unreachable://tok", ("tokenizer.json",), (), "data.tokenizer_path"),
                       "data.tokenizer_path"),
                      (lambda: Mirror("unreachable://runs/b").pull(), "run_dir")):
        with pytest.raises(UserError, match=rf"'{key}': .*'unreachable://.*' failed: ConnectionError: Cannot connect"):
            call()

    Unreachable.down = False
    m = Mirror("unreachable://runs/b")
    assert m.pull() == 0
    (m.local / "checkpoints" / "1").mkdir(parents=True)
    (m.local / "checkpoints" / "1" / "data").write_text("one")
    assert m.push() == 1
    (m.local / "checkpoints" / "2").mkdir()
    (m.local / "checkpoints" / "2" / "data").write_text("two")
    Unreachable.down = True  # the network goes while the run pushes its next checkpoint
    with pytest.raises(UserError, match=rf"'run_dir': pushing the run \(kept in {m.local}\) to 'unreachable://runs/b'"):
        m.push()
    Unreachable.down = False  # back: a rerun sends what the failed push left, keeping the staging copy
    rerun = Mirror("unreachable://runs/b")
    assert rerun.pull() == 0 and rerun.resent == 1 and unreachable.cat("/runs/b/checkpoints/2/data") == b"two"
    (rerun.local / "checkpoints" / "3").mkdir()
    (rerun.local / "checkpoints" / "3" / "data").write_text("three")  # never sent ...
    unreachable.pipe("/runs/b/checkpoints/9/data", b"another machine's")  # ... and someone else wrote there
    with pytest.raises(UserError, match="never sent to unreachable://runs/b, and the URL has changed since"):
        Mirror("unreachable://runs/b").pull()
    assert (rerun.local / "checkpoints" / "3" / "data").read_text() == "three"  # nothing thrown away
