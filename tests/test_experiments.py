"""The helpers of the scripts in experiments/ against their definitions (the scripts are not a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def markup_rows():
    spec = importlib.util.spec_from_file_location("markup_rows", ROOT / "experiments" / "markup_rows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_markup_share_counts_the_bytes_of_commands_braces_and_math(markup_rows):
    assert markup_rows.markup_share(b"") == 0.0
    assert markup_rows.markup_share(b"plain words") == 0.0
    # \emph (5 bytes) + { + } = 7 of 12 bytes
    assert markup_rows.markup_share(b"\\emph{word}.") == pytest.approx(7 / 12)
    # $ x ^ 2 $: $, ^, $ are markup, x and 2 are not
    assert markup_rows.markup_share(b"$x^2$") == pytest.approx(3 / 5)
    assert markup_rows.markup_share(b"50\\% & more") == pytest.approx(3 / 11)  # the escape \% (2 bytes) and &


def test_a_row_cut_inside_a_character_keeps_its_exact_bytes(markup_rows):
    import numpy as np

    from datarater.data.tokenizer import ByteTokenizer

    tok = ByteTokenizer()
    data = "é\\x{}".encode()[1:]  # starts inside the 2-byte é: 1 stray byte, then \x{} (4 bytes, all markup)
    ids = np.concatenate([[tok.bos_id], np.frombuffer(data, np.uint8).astype(np.int32) + ByteTokenizer.OFFSET, [tok.pad_id]])
    assert markup_rows.row_bytes(tok, ids) == data  # specials dropped, no 3-byte replacement character added
    assert markup_rows.markup_share(markup_rows.row_bytes(tok, ids)) == pytest.approx(4 / 5)


def test_split_by_markup_keeps_every_line_in_order_and_classes_each_run(markup_rows):
    text = "Prose one.\nProse two.\n\n\\begin{equation}\nx^{2} = y_{1}\n\\end{equation}\n\nMore prose \\cite{a}, ok."
    runs = markup_rows.split_by_markup(text, threshold=0.3)
    assert "\n".join(run for _, run in runs) == text  # nothing lost, nothing reordered
    assert [kind for kind, _ in runs] == ["latex_prose", "latex_markup", "latex_prose"]
    # the blank line after a run joins it, whatever its class
    assert runs[1][1].startswith("\\begin{equation}") and runs[1][1].endswith("\\end{equation}\n")
    # the last line's markup (\cite and its braces: 7 of 24 bytes, 0.29) is under 0.3, over 0.25
    assert markup_rows.split_by_markup("More prose \\cite{a}, ok.", 0.3)[0][0] == "latex_prose"
    assert markup_rows.split_by_markup("More prose \\cite{a}, ok.", 0.25)[0][0] == "latex_markup"
