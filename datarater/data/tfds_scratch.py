"""A TFDS builder's empty scratch directory, kept out of the system temp dir.

A TFDS builder whose dataset info is not on disk yet (a corpus about to be built) asks GCS for
it (``DatasetInfo.initialize_from_bucket``). It makes an empty ``mkdtemp("tfds")`` directory
first, and with no network leaves it behind, one per build: hundreds had piled up in /tmp over
the test runs.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def tfds_scratch_tempdir() -> Iterator[None]:
    """Temporary files and directories made inside the block go to a directory removed after it."""
    old = tempfile.tempdir
    with tempfile.TemporaryDirectory() as scratch:
        tempfile.tempdir = scratch
        try:
            yield
        finally:
            tempfile.tempdir = old
