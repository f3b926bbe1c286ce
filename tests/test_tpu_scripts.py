"""The tpu/ scripts: bash syntax, and the gcloud commands their --dry-run prints for a v5e-32 run."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

TPU = Path(__file__).resolve().parent.parent / "tpu"
SCRIPTS = ["common.sh", "create.sh", "setup.sh", "launch.sh", "watch.sh", "teardown.sh"]
WHERE = ["--name", "dr-v5e", "--zone", "us-west4-a", "--project", "my-proj"]
COMMAND = ["meta-train", "+experiment=meta_rater_50m", "corpus=tfds", "corpus.tfds_name=c4/en:3.1.0",
           "corpus.tfds_data_dir=/mnt/gcs/my-bucket/tfds", "data=sentencepiece",
           "data.tokenizer_path=/mnt/gcs/my-bucket/spm 32k.model"]


@pytest.fixture(scope="module")
def fake_path(tmp_path_factory) -> str:
    """PATH whose first ``gcloud`` fails loudly: a dry run must never call it."""
    d = tmp_path_factory.mktemp("bin")
    (d / "gcloud").write_text("#!/bin/sh\necho 'gcloud was called in a dry run' >&2\nexit 97\n")
    (d / "gcloud").chmod(0o755)
    return f"{d}:/usr/bin:/bin"


def dry_run(path: str, script: str, *args: str) -> list[list[str]]:
    """The printed commands of ``script --dry-run``, each split into argv (comments dropped)."""
    env = {"PATH": path, "HOME": "/nonexistent"}
    r = subprocess.run(["bash", str(TPU / script), "--dry-run", *args], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return [shlex.split(line) for line in r.stdout.splitlines() if line.strip() and not line.startswith("#")]


def flags(argv: list[str]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)


def gcloud(cmds: list[list[str]], *path: str) -> list[list[str]]:
    return [c for c in cmds if c[: 1 + len(path)] == ["gcloud", *path]]


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse(script):
    r = subprocess.run(["bash", "-n", str(TPU / script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    if script != "common.sh":
        text = (TPU / script).read_text()
        assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text


def test_launch_dry_run_for_a_v5e_32_run(fake_path):
    cmds = dry_run(fake_path, "launch.sh", *WHERE, "--accelerator", "v5e-32", "--queued", "--spot", "--create",
                   "--run-dir", "gs://my-bucket/runs/rater-c4", "--", *COMMAND)
    assert all(c[0] in ("gcloud", "tar") for c in cmds), cmds
    create = gcloud(cmds, "compute", "tpus", "queued-resources", "create")
    assert len(create) == 1 and create[0][5] == "dr-v5e"
    f = flags(create[0])
    assert f["accelerator-type"] == "v5litepod-32" and f["zone"] == "us-west4-a" and f["project"] == "my-proj"
    assert f["node-id"] == "dr-v5e" and f["runtime-version"] == "v2-alpha-tpuv5-lite" and "--spot" in create[0]
    check = gcloud(cmds, "compute", "tpus", "tpu-vm", "describe")
    assert check and flags(check[0])["format"] == "value(acceleratorType)"
    ssh = gcloud(cmds, "compute", "tpus", "tpu-vm", "ssh")
    assert len(ssh) == 2  # set-up, then the run
    for c in ssh:
        assert c[5] == "dr-v5e" and "--worker=all" in c and flags(c)["zone"] == "us-west4-a"
    setup, run = flags(ssh[0])["command"], flags(ssh[1])["command"]
    assert "jax[tpu]" in setup and "gcsfuse --implicit-dirs my-bucket /mnt/gcs/my-bucket" in setup
    # the remote command line: every worker runs the same datarater command, multi-host on
    remote = shlex.split(run.split("&&")[-1].split(">")[0])
    assert remote[0] == "DATARATER_DISTRIBUTED=1" and remote[1] == "nohup" and remote[2] == ".venv/bin/datarater"
    assert remote[3:] == [*COMMAND, "run_dir=/mnt/gcs/my-bucket/runs/rater-c4"]
    # the source goes to every worker before the set-up
    scp = gcloud(cmds, "compute", "tpus", "tpu-vm", "scp")
    assert scp and "--worker=all" in scp[0] and cmds.index(scp[0]) < cmds.index(ssh[0])


def test_launch_without_create_only_runs_the_command(fake_path):
    cmds = dry_run(fake_path, "launch.sh", *WHERE, "--run-dir", "/shared/runs/x", "--", "datarater", "train-lm",
                   "+experiment=chinchilla_1b")
    assert len(cmds) == 1 and cmds[0][:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]
    assert "datarater train-lm +experiment=chinchilla_1b run_dir=/shared/runs/x" in flags(cmds[0])["command"]


@pytest.mark.parametrize("accel,expected,version", [
    ("v5e-32", "v5litepod-32", "v2-alpha-tpuv5-lite"),
    ("v5p-64", "v5p-64", "v2-alpha-tpuv5"),
    ("v6e-16", "v6e-16", "v2-alpha-tpuv6e"),
])
def test_create_names_the_accelerator(fake_path, accel, expected, version):
    [vm] = dry_run(fake_path, "create.sh", *WHERE, "--accelerator", accel, "--reserved")
    assert vm[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"] and "--reserved" in vm
    assert flags(vm)["accelerator-type"] == expected and flags(vm)["version"] == version


def test_watch_and_teardown_dry_run(fake_path):
    cmds = dry_run(fake_path, "watch.sh", *WHERE, "--accelerator", "v5e-32", "--queued", "--run-dir", "gs://my-bucket/runs/r",
                   "--", "train-lm")
    assert cmds[0] == ["gcloud", "storage", "ls", "gs://my-bucket/runs/r/summary.json"]
    assert gcloud(cmds, "compute", "tpus", "queued-resources", "describe")
    order = [c[4] for c in cmds if c[:3] == ["gcloud", "compute", "tpus"] and c[4] in ("delete", "create")]
    assert order == ["delete", "create"]  # recovery: the lost slice goes, a new one comes
    assert any("DATARATER_DISTRIBUTED=1" in flags(c).get("command", "") for c in cmds)
    [down] = dry_run(fake_path, "teardown.sh", *WHERE, "--queued")
    assert down[:5] == ["gcloud", "compute", "tpus", "queued-resources", "delete"] and "--force" in down


def test_bad_input_is_a_message_not_a_trace():
    r = subprocess.run(["bash", str(TPU / "create.sh"), "--zone", "z", "--accelerator", "v5e-8", "--dry-run"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--name is required" in r.stderr
    r = subprocess.run(["bash", str(TPU / "create.sh"), *WHERE, "--accelerator", "v9x-8", "--dry-run"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown accelerator 'v9x-8'" in r.stderr
