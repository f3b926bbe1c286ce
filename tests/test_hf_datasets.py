"""corpus=hf: a Hugging Face datasets.save_to_disk folder (Arrow IPC shards, written here with
pyarrow as `datasets` writes them) reads like any corpus, a DatasetDict's splits included; a
damaged shard is named."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from datarater.cli import SUBCOMMANDS, compose
from datarater.config import CorpusConfig
from datarater.data.documents import ReadStats
from datarater.data.files import iter_files
from datarater.errors import UserError


def save_to_disk(folder: Path, rows: list[dict], shards: int = 2, stream: bool = True) -> Path:
    """What ``Dataset.save_to_disk`` leaves: data-0000k-of-0000n.arrow (IPC stream), state.json, dataset_info.json."""
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-len(rows) // shards)
    names = []
    for k in range(shards):
        table = pa.Table.from_pylist(rows[k * per:(k + 1) * per])
        name = f"data-{k:05d}-of-{shards:05d}.arrow"
        with pa.OSFile(str(folder / name), "wb") as sink:
            writer = pa.ipc.new_stream(sink, table.schema) if stream else pa.ipc.new_file(sink, table.schema)
            for batch in table.to_batches(max_chunksize=7):
                writer.write_batch(batch)
            writer.close()
        names.append(name)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names]}))
    (folder / "dataset_info.json").write_text(json.dumps({"features": {"text": {"dtype": "string"}}}))
    return folder


def rows(n: int, prefix: str) -> list[dict]:
    return [{"id": f"{prefix}{i}", "text": f"document {i} of {prefix}: " + "words here " * 5, "meta": i} for i in range(n)]


def read(folder: Path, **kw) -> tuple[list, ReadStats]:
    stats = ReadStats()
    return [doc for doc, _ in iter_files(CorpusConfig(paths=[str(folder)], **kw), stats)], stats


@pytest.mark.parametrize("stream", [True, False])
def test_a_saved_dataset_folder_reads_every_row_in_order(tmp_path, stream):
    folder = save_to_disk(tmp_path / "ds", rows(45, "a"), stream=stream)
    docs, stats = read(folder)
    assert [d.id for d in docs] == [f"a{i}" for i in range(45)] and stats.read == 45
    assert docs[3].text.startswith("document 3 of a") and docs[0].source == "data-00000-of-00002"


def test_a_dataset_dict_reads_each_split_folder_and_bad_shards_are_named(tmp_path):
    save_to_disk(tmp_path / "dd" / "train", rows(20, "t"))
    save_to_disk(tmp_path / "dd" / "test", rows(10, "v"), shards=1)
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    docs, _ = read(tmp_path / "dd")
    assert sorted(d.id for d in docs) == sorted([f"t{i}" for i in range(20)] + [f"v{i}" for i in range(10)])
    with pytest.raises(UserError, match="has no column 'body'.*columns present"):
        read(tmp_path / "dd", text_field="body")
    bad = tmp_path / "dd" / "test" / "data-00000-of-00001.arrow"
    bad.write_bytes(b"not arrow at all")
    with pytest.raises(UserError, match=r"data-00000-of-00001\.arrow: cannot be read as an Arrow IPC"):
        read(tmp_path / "dd")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="is a directory"):
        read(tmp_path / "plain")


def test_corpus_hf_trains_an_lm(tmp_path):
    from datarater.programs.train_lm import run as train_lm

    folder = save_to_disk(tmp_path / "ds", rows(300, "d"))
    prog = compose(SUBCOMMANDS["train-lm"], ["corpus=hf", f"corpus.paths=[{folder}]", "model=nano", "data.seq_len=64",
                                             "train.batch_size=8", "train.steps=3", f"run_dir={tmp_path / 'run'}"])
    out = train_lm(prog)
    assert out["steps"] == 3 and out["documents"]["used"] == 300
