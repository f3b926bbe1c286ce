"""The fault suite's outcome table: each case records its row; ``DATARATER_FAULT_TABLE=FILE`` writes them as markdown at the end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

OUTCOMES: list[dict] = []


@pytest.fixture
def record(request):
    """``record(command, fault, outcome)``: one row of the README's reliability table."""

    def add(command: str, fault: str, outcome: str, lost: int = 0) -> None:
        OUTCOMES.append({"command": command, "fault": fault, "outcome": outcome, "lost": lost,
                         "test": request.node.name})

    return add


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("DATARATER_FAULT_TABLE")
    if not out or not OUTCOMES:
        return
    lines = ["| command | fault injected | outcome | data lost |", "|---|---|---|---|"]
    lines += [f"| `{o['command']}` | {o['fault']} | {o['outcome']} | {o['lost']} |" for o in OUTCOMES]
    kinds = {"resumed": sum(o["outcome"].startswith("resumed") for o in OUTCOMES),
             "error": sum(o["outcome"].startswith("clear error") for o in OUTCOMES)}
    lines += ["", f"{len(OUTCOMES)} faults injected: {kinds['resumed']} runs resumed to identical results, "
              f"{kinds['error']} clear errors, {len(OUTCOMES) - kinds['resumed'] - kinds['error']} handled in the run; "
              f"data lost: {sum(o['lost'] for o in OUTCOMES)}"]
    Path(out).write_text("\n".join(lines) + "\n")
