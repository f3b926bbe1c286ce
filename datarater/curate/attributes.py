"""Attribute files: a score per document, one parquet file per input file, as dolma's attributes and datatrove do.

Layout: ``ROOT/<curator>/<relative input path>.parquet`` with columns ``id``, ``score`` (the mean
of the document's ``seq_len`` chunks), ``chunks`` and ``split``; rows in the input file's order.
Each file is written atomically (temporary file, then rename) and carries in its parquet
metadata what it was computed from: the input file's identity (size and modification time, or
the TFDS range) and the scoring settings. A file whose record matches is complete and is not
scored again; one that does not match is an error naming both. Any other tool's attribute files
(a fastText score, an LLM rater's ratings) with an ``id`` and a numeric column are read by
`read_document_scores` / ``curate=attributes``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from datarater.data.stream import Shard
from datarater.errors import UserError

ATTRIBUTES_DIR = "attributes"
_META_KEY = b"datarater.attributes"
_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".jsonl.zst")


def attribute_path(root: str | Path, curator: str, shard: Shard) -> Path:
    """Where the attributes of ``shard`` go (its key may not climb out of ``root``)."""
    rel = Path(shard.key)
    if rel.is_absolute() or ".." in rel.parts:
        raise UserError(f"input {shard.key!r}: its relative path leaves the attribute directory; "
                        "give corpus.paths as a glob below one base directory")
    return Path(root) / curator / (shard.key + ".parquet")


def input_identity(shard: Shard) -> dict[str, Any]:
    """What identifies an input shard's content cheaply: size and mtime of a file, or a TFDS range."""
    if shard.file is None:
        return {"key": shard.key, "records": [shard.start, shard.stop]}
    path = shard.file.path
    if "://" in path:
        import fsspec

        fs, p = fsspec.core.url_to_fs(path)
        info = fs.info(p)
        return {"key": shard.key, "size": int(info.get("size", -1)),
                "mtime": str(info.get("mtime") or info.get("updated") or info.get("LastModified") or "")}
    st = os.stat(path)
    return {"key": shard.key, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def write_attributes(path: Path, ids: list[str], scores: np.ndarray, chunks: np.ndarray, splits: list[str],
                     record: dict[str, Any]) -> Path:
    """Writes one attribute file atomically: on disk it is complete or absent."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": pa.array(ids, pa.string()), "score": pa.array(np.asarray(scores, np.float32), pa.float32()),
                      "chunks": pa.array(np.asarray(chunks, np.int32), pa.int32()),
                      "split": pa.array(splits, pa.string())})
    table = table.replace_schema_metadata({_META_KEY: json.dumps(record, sort_keys=True).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return path


def record_on_disk(path: Path) -> dict[str, Any] | None:
    """The record a finished attribute file carries; None if it is missing or unreadable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    raw = meta.get(_META_KEY)
    return json.loads(raw) if raw else None


def is_done(path: Path, record: dict[str, Any], force: bool = False) -> bool:
    """Whether ``path`` holds the attributes of ``record`` already. One that holds another
    producer's or other inputs' scores is a `UserError` naming both, or with ``force`` is not
    done (it is scored again and replaced)."""
    from datarater.curate.provenance import describe, same_producer

    found = record_on_disk(path) if path.exists() else None
    if found is None:
        return False
    if not same_producer(found.get("producer"), record.get("producer")):
        if force:
            return False
        raise UserError(f"{path} holds scores by {describe(found.get('producer'))}; this run scores with "
                        f"{describe(record.get('producer'))}: set score.force=true to rescore the files of the "
                        "other producer, or use a new run_dir")
    diff = {k: (found.get(k), record.get(k)) for k in set(found) | set(record)
            if k != "producer" and found.get(k) != record.get(k)}
    if diff:
        if force:
            return False
        raise UserError(f"{path} holds scores computed from something else (differs in {sorted(diff)}: on disk "
                        f"{ {k: v[0] for k, v in diff.items()} }, now { {k: v[1] for k, v in diff.items()} }): "
                        "use a new run_dir, or score.force=true to rescore")
    return True


def attribute_producer(root: str | Path) -> dict[str, Any] | None:
    """The one producer of the attribute files under ``root`` (`UserError` if they are mixed);
    None for files other tools wrote (no record)."""
    from datarater.curate.provenance import check_one_producer

    found = []
    for _, path in attribute_files(root):
        rec = record_on_disk(path) if path.suffix == ".parquet" else None
        if rec is not None:
            found.append((str(path), rec.get("producer")))
    return check_one_producer(found, str(root))


def attribute_files(root: str | Path) -> Iterator[tuple[str, Path]]:
    """``(relative input path, file)`` of every attribute file under ``root`` (sorted)."""
    root = Path(root)
    for p in sorted(root.rglob("*")):
        name = p.name
        if p.is_file() and not name.startswith(".") and name.endswith(_SUFFIXES):
            suffix = next(s for s in _SUFFIXES if name.endswith(s))
            yield str(p.relative_to(root))[: -len(suffix)], p


def read_file_scores(path: Path, column: str = "score", id_field: str = "id") -> tuple[list[str], np.ndarray]:
    """``(ids, scores)`` of one attribute file (parquet, or JSON Lines with flat fields)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.name.endswith(".parquet"):
        try:
            names = pq.read_schema(path).names
            if id_field not in names or column not in names:
                raise UserError(f"{path}: needs columns '{id_field}' and '{column}'; it has {names} "
                                "(set curate.attribute / curate.attribute_id)")
            table = pq.read_table(path, columns=[id_field, column])
        except (OSError, pa.ArrowException) as e:
            raise UserError(f"{path}: cannot be read as an attribute file: {e}") from None
        ids = [str(x) for x in table.column(id_field).to_pylist()]
        scores = np.asarray([np.nan if v is None else v for v in table.column(column).to_pylist()], np.float64)
        return ids, scores
    from datarater.data.openers import TruncatedStream, iter_lines

    ids, values = [], []
    try:
        for n, line in enumerate(iter_lines(str(path)), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                ids.append(str(rec[id_field]))
                values.append(float(rec[column]) if rec[column] is not None else np.nan)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise UserError(f"{path}:{n}: not an attribute record with '{id_field}' and numeric "
                                f"'{column}' ({type(e).__name__}: {e})") from None
    except TruncatedStream as e:
        raise UserError(f"{path}: {e}") from None
    return ids, np.asarray(values, np.float64)


def read_document_scores(root: str | Path, column: str = "score", id_field: str = "id") -> dict[int, float]:
    """Document key (`datarater.data.keys`) -> score, over every attribute file under ``root``."""
    from datarater.data import keys

    out: dict[int, float] = {}
    files = 0
    for _, path in attribute_files(root):
        ids, scores = read_file_scores(path, column, id_field)
        out.update(zip(keys.keys(ids).tolist(), scores.tolist(), strict=True))
        files += 1
    if not files:
        raise UserError(f"{root}: holds no attribute file (*.parquet, *.jsonl[.gz|.zst]); run "
                        "`datarater score score.unit=document` or point curate.attributes at another tool's")
    return out
