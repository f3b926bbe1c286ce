"""The streaming data path at corpus scale: host memory, start-up and input throughput as the corpus grows.

    python benchmarks/data_pipeline.py [--sizes 1 4 16] [--dir /tmp/datarater-bench] [--steps 50]

For each size (GiB of text) it generates, once, a corpus of ``.jsonl.zst`` files of 1 GiB of text
each in ``--dir`` (documents of ``../shared/data/corpus`` repeated under new ids; never in the
repository), then measures in one run:
- ``datarater train-lm model=nano train.steps=N`` on it (the streaming reader), ``--repeats`` times
  (medians reported): peak resident
  memory of that process (``wait4``'s ``ru_maxrss``), seconds from launch to the end of step 1
  (with the compilation cache off, so each run compiles as a first run does), and the LM's own tokens/s;
- the pipeline alone in this process (read, split, tokenize, pack, window-shuffle, batch nano's
  batches): tokens/s over ``--batches`` batches after the first, and its ratio to the LM's.
Prints a table and one ``RESULT`` JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus"
GIB = 1 << 30


def generate(out: Path, gib: int) -> list[Path]:
    """``gib`` files of 1 GiB of JSON Lines each, zstandard-compressed; reused if already complete."""
    import zstandard

    out.mkdir(parents=True, exist_ok=True)
    docs = []
    for f in sorted(SHARED.glob("*.jsonl")):
        for line in f.read_text().split("\n"):
            if not line.strip():
                continue
            r = json.loads(line)
            docs.append((r["source"], r["text"]))
    files = []
    for k in range(gib):
        path = out / f"part-{k:05d}.jsonl.zst"
        files.append(path)
        if path.exists():
            continue
        tmp = path.with_suffix(".tmp")
        written, i = 0, 0
        with tmp.open("wb") as raw, zstandard.ZstdCompressor(level=3, threads=2).stream_writer(raw) as w:
            while written < GIB:
                source, text = docs[i % len(docs)]
                line = json.dumps({"id": f"p{k}-{i}", "text": text, "source": source}) + "\n"
                data = line.encode()
                w.write(data)
                written += len(data)
                i += 1
        os.replace(tmp, path)
    return files


def train_lm(paths: list[Path], run_dir: Path, steps: int) -> dict:
    args = [sys.executable, "-m", "datarater.cli", "train-lm", "model=nano", f"train.steps={steps}",
            f"corpus.paths=[{','.join(str(p) for p in paths)}]", "corpus.reader=stream", f"train.eval_every={steps}",
            "train.log_every=10", f"train.checkpoint_every={steps}", f"run_dir={run_dir}"]
    t0 = time.time()
    env = dict(os.environ, DATARATER_COMPILATION_CACHE="off")  # every size compiles from scratch, as a first run does
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir.parent / f"{run_dir.name}.log").open("w") as log:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"train-lm failed: see {run_dir.parent / (run_dir.name + '.log')}")
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    tok_s = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][1:]  # after the first (compilation) window
    return {"peak_rss_mib": usage.ru_maxrss / 1024, "startup_s": summary["first_step_at"] - t0,
            "lm_tokens_per_s": sum(tok_s) / max(len(tok_s), 1)}


def pipeline_alone(paths: list[Path], batches: int) -> float:
    from datarater.config import CorpusConfig, DataConfig
    from datarater.data.documents import ReadStats
    from datarater.data.pipeline import make_iterator
    from datarater.data.stream import Selection, train_stream
    from datarater.data.tokenizer import ByteTokenizer

    corpus, data = CorpusConfig(paths=[str(p) for p in paths], reader="stream"), DataConfig()
    it = make_iterator(train_stream(corpus, data, ByteTokenizer(), Selection("train"), 32, 0, ReadStats()))
    next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * 32 * data.seq_len / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--dir", default="/tmp/datarater-bench")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3, help="train-lm runs per size (peak RSS varies run to run)")
    a = ap.parse_args()
    root = Path(a.dir)
    rows = []
    for gib in a.sizes:
        t = time.perf_counter()
        paths = generate(root / "corpus", gib)  # the k GiB corpus is the first k files of the largest
        gen = time.perf_counter() - t
        on_disk = sum(p.stat().st_size for p in paths) / GIB
        runs = [train_lm(paths, root / f"run-{gib}gib-{int(time.time())}-{r}", a.steps) for r in range(a.repeats)]
        rss = sorted(r["peak_rss_mib"] for r in runs)
        lm = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        lm["peak_rss_range_mib"] = [rss[0], rss[-1]]
        alone = pipeline_alone(paths, a.batches)
        rows.append({"gib_text": gib, "gib_on_disk": round(on_disk, 2), "files": len(paths), **lm,
                     "pipeline_tokens_per_s": alone, "pipeline_over_lm": alone / lm["lm_tokens_per_s"],
                     "generate_s": round(gen, 1)})
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["peak_rss_mib"]
    print(f"\n| text | on disk | files | peak RSS of train-lm (median, range of {a.repeats}) | vs smallest | start-up to step 1 | LM tokens/s "
          "| pipeline tokens/s | pipeline / LM |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["peak_rss_range_mib"]
        print(f"| {r['gib_text']} GiB | {r['gib_on_disk']} GiB | {r['files']} | {r['peak_rss_mib']:.0f} ({lo:.0f}–{hi:.0f}) MiB "
              f"| {r['peak_rss_mib'] / base:.2f}x | {r['startup_s']:.1f} s | {r['lm_tokens_per_s']:,.0f} "
              f"| {r['pipeline_tokens_per_s']:,.0f} | {r['pipeline_over_lm']:.1f}x |")
    print("RESULT " + json.dumps(rows))


if __name__ == "__main__":
    main()
