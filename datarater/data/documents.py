"""Documents and the bookkeeping of reading them.

A `Document` is one unit of text from a corpus. `ReadStats` counts what happened to every
record read: yielded to the caller (``used``) or skipped for a named reason, so that a run can
report exactly how much of its input it used and why the rest was dropped.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

MAX_WARNINGS_PER_REASON = 10


@dataclass(frozen=True)
class Document:
    """One document: a stable id, its text, the source (sub-corpus) it came from and, where the
    corpus knows it, a ground-truth quality label (the embedded corpus: "clean" or a corruption
    type; empty when unknown)."""

    id: str
    text: str
    source: str
    label: str = ""


@dataclass
class ReadStats:
    """Counts of documents read, used and skipped by reason.

    Invariant: ``read == used + sum(skipped.values())``. ``used`` counts documents yielded to
    the caller; a caller that drops a document after receiving it calls `drop_used`.
    Only the first `MAX_WARNINGS_PER_REASON` warnings of each reason are kept (with their
    ``file:line``); the others are only counted in ``warnings_not_kept``.
    """

    read: int = 0
    used: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    utf8_replaced: int = 0
    # lines lost without being read as documents (the incomplete line at the cut of a truncated
    # compressed file, kept with corpus.allow_truncated=true): not in ``read``
    lost: Counter[str] = field(default_factory=Counter)
    truncated_files: int = 0
    warnings: list[str] = field(default_factory=list)
    warnings_not_kept: Counter[str] = field(default_factory=Counter)
    _warned: Counter[str] = field(default_factory=Counter, repr=False)

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        """Count one read document as skipped for ``reason`` (``where`` is ``file:line``)."""
        self.skipped[reason] += 1
        self.warn(reason, f"{where}: skipped ({reason}{': ' + detail if detail else ''})")

    def drop_used(self, reason: str, where: str) -> None:
        """Turn one already used (yielded) document into a skip, keeping the invariant."""
        self.used -= 1
        self.skip(reason, where)

    def warn(self, reason: str, message: str) -> None:
        """Keep (and log) a warning unless ``reason`` already has its quota of kept warnings."""
        if self._warned[reason] < MAX_WARNINGS_PER_REASON:
            self._warned[reason] += 1
            self.warnings.append(message)
            logger.warning("%s", message)
        else:
            self.warnings_not_kept[reason] += 1

    def _skipped_sorted(self) -> list[tuple[str, int]]:
        return sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0]))

    def summary(self) -> str:
        """One line, e.g. ``documents read 1000 = used 990 + skipped 10 (empty: 7, invalid_json: 3);
        invalid UTF-8 replaced in 2 documents``.

        The parenthesis is left out when nothing was skipped, the UTF-8 clause when nothing was
        replaced; reasons are ordered by count, then name.
        """
        total_skipped = sum(self.skipped.values())
        text = f"documents read {self.read} = used {self.used} + skipped {total_skipped}"
        if total_skipped:
            text += " (" + ", ".join(f"{k}: {v}" for k, v in self._skipped_sorted()) + ")"
        if self.utf8_replaced:
            text += f"; invalid UTF-8 replaced in {self.utf8_replaced} documents"
        if self.truncated_files:
            text += (f"; {self.truncated_files} truncated files read up to their cut, "
                     f"{sum(self.lost.values())} incomplete lines lost")
        return text

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form for the run's metrics."""
        return {
            "read": self.read,
            "used": self.used,
            "skipped": dict(self._skipped_sorted()),
            "utf8_replaced": self.utf8_replaced,
            "lost_lines": dict(self.lost),
            "truncated_files": self.truncated_files,
            "warnings": list(self.warnings),
            "warnings_not_kept": dict(self.warnings_not_kept),
        }
