"""The embedded corpus as a TFDS dataset (ArrayRecord files, built and read without TensorFlow).

    from datarater.data.embedded.builder import build_embedded
    name, data_dir = build_embedded("~/.cache/datarater/tfds", seed=0)
    source = tfds.data_source(name, split="train", data_dir=data_dir)

Features: ``id``, ``text``, ``source`` and ``label`` (all text); one split, ``train``, in the
harvest's seeded order. The config name carries seed, corrupt fraction and size (`naming`); the
installed versions the text came from are in the dataset's metadata (``metadata.json``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds

from datarater.data.documents import Document
from datarater.data.embedded.corrupt import MIXES, corrupt_documents
from datarater.data.embedded.harvest import HarvestConfig, HarvestStats, harvest
from datarater.data.embedded.naming import (
    VERSION,
    EmbeddedSpec,
    default_data_dir,
    is_built,
)
from datarater.data.embedded.pyfiles import installed_versions
from datarater.data.tfds_scratch import tfds_scratch_tempdir

FEATURES = ("id", "text", "source", "label")


def embedded_documents(spec: EmbeddedSpec, stats: HarvestStats | None = None) -> list[Document]:
    """The corpus of ``spec`` in memory: harvested, then a seeded fraction corrupted and labelled."""
    docs = harvest(spec.seed, HarvestConfig(max_documents=spec.max_documents), stats)
    return corrupt_documents(docs, seed=spec.seed, fraction=spec.corrupt_fraction, kinds=MIXES[spec.mix])


def corpus_metadata(spec: EmbeddedSpec, docs: list[Document], stats: HarvestStats) -> dict[str, Any]:
    """What a build is made of: its spec, the versions read and counts per source and label."""
    return {
        "seed": spec.seed,
        "corrupt_fraction": spec.corrupt_fraction,
        "max_documents": spec.max_documents,
        "mix": spec.mix,
        "documents": len(docs),
        "text_bytes": sum(len(d.text.encode("utf-8")) for d in docs),
        "per_source": dict(sorted(Counter(d.source for d in docs).items())),
        "per_label": dict(sorted(Counter(d.label for d in docs).items())),
        "installed_versions": installed_versions(),
        "files_listed": stats.files_listed,
        "files_read": stats.files_read,
        "files_skipped": dict(stats.skipped),
        "missing_packages": stats.missing_packages,
    }


@dataclass(eq=False)
class EmbeddedConfig(tfds.core.BuilderConfig):
    """A TFDS config of the embedded corpus; build one with `EmbeddedConfig.of`."""

    seed: int = 0
    corrupt_fraction: float = 0.3
    max_documents: int = 4000
    mix: str = "paper"

    @classmethod
    def of(cls, spec: EmbeddedSpec) -> EmbeddedConfig:
        return cls(
            name=spec.config_name,
            version=VERSION,
            description=(
                f"seed {spec.seed}, {spec.corrupt_fraction:.1%} of documents corrupted, "
                f"at most {spec.max_documents} documents, corruption mix {spec.mix}"
            ),
            seed=spec.seed,
            corrupt_fraction=spec.corrupt_fraction,
            max_documents=spec.max_documents,
            mix=spec.mix,
        )

    @property
    def spec(self) -> EmbeddedSpec:
        return EmbeddedSpec(self.seed, self.corrupt_fraction, self.max_documents, self.mix)


class DataraterEmbedded(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Docstring prose and code of the Python installation, a seeded fraction corrupted."""

    VERSION = tfds.core.Version(VERSION)
    BUILDER_CONFIGS = [EmbeddedConfig.of(EmbeddedSpec())]

    def _info(self) -> tfds.core.DatasetInfo:
        # DatasetInfo directly: `dataset_info_from_configs` looks for metadata files next to the code
        features = tfds.features.FeaturesDict({name: tfds.features.Text() for name in FEATURES})
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Real human-written text every installation carries: prose of the docstrings of "
                "the Python standard library and of the installed dependencies, and their source "
                "code; a seeded fraction of documents corrupted into low-quality web text, each "
                "labelled with its corruption type or 'clean'."
            ),
            features=features,
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        spec = self.builder_config.spec
        stats = HarvestStats()
        docs = embedded_documents(spec, stats)
        self.info.metadata.update(corpus_metadata(spec, docs, stats))
        for index, doc in enumerate(docs):
            yield index, {"id": doc.id, "text": doc.text, "source": doc.source, "label": doc.label}


@contextlib.contextmanager
def _quiet_tfds() -> Iterator[None]:
    """Keep TFDS's "Downloading and preparing..." prints and absl warnings off the console."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        absl_logger.setLevel(level)


def build_embedded(
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    corrupt_fraction: float = 0.3,
    max_documents: int = 4000,
    mix: str = "paper",
) -> tuple[str, str]:
    """Build the embedded corpus in ``data_dir`` unless it is already there; return ``(name,
    data_dir)`` for ``tfds.data_source(name, split="train", data_dir=data_dir)``.

    ``data_dir`` defaults to `default_data_dir` (``$DATARATER_DATA_DIR`` or
    ``~/.cache/datarater/tfds``). Needs no network and no TensorFlow.
    """
    spec = EmbeddedSpec(seed, corrupt_fraction, max_documents, mix)
    root = Path(os.path.expanduser(data_dir)) if data_dir else default_data_dir()
    if not is_built(root, spec):
        root.mkdir(parents=True, exist_ok=True)
        tfds.disable_progress_bar()
        known = spec.config_name in DataraterEmbedded.builder_configs  # TFDS refuses a second object of that name
        config = spec.config_name if known else EmbeddedConfig.of(spec)
        with _quiet_tfds(), tfds_scratch_tempdir():
            builder = DataraterEmbedded(config=config, data_dir=str(root), file_format="array_record")
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False),
                file_format="array_record",
            )
        for empty in (root / "downloads" / "extracted", root / "downloads"):  # TFDS makes them; nothing is downloaded
            with contextlib.suppress(OSError):
                empty.rmdir()
    return spec.tfds_name, str(root)
