"""Interruptions lose nothing and reruns are identical (CPU, same seed)."""

import json
import signal
import subprocess
import sys
import time

import pytest

from experiments import PROJECT_ROOT, records
from experiments.commands.run import run
from experiments.config import compose
from tests.helpers.clue import tiny_overrides
from tests.helpers.runs import numbers


@pytest.mark.slow
def test_two_runs_with_the_same_seed_are_identical(clue_dir, tmp_path):
    a = run(compose(tiny_overrides(clue_dir, tmp_path / "a", method="fgm", extra={"method.epsilon": 0.05, "seed": 3})))
    b = run(compose(tiny_overrides(clue_dir, tmp_path / "b", method="fgm", extra={"method.epsilon": 0.05, "seed": 3})))
    assert numbers(a["history"]) == numbers(b["history"])
    c = run(compose(tiny_overrides(clue_dir, tmp_path / "c", method="fgm", extra={"method.epsilon": 0.05, "seed": 4})))
    assert numbers(c["history"]) != numbers(a["history"])  # the seed matters


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_record(clue_dir, tmp_path):
    overrides = tiny_overrides(clue_dir, tmp_path / "killed", extra={"trainer.epochs": 4, "trainer.resume": True})
    runs = tmp_path / "killed" / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.commands.run", *overrides],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    latest = next((tmp_path / "killed").glob("checkpoints/*/state/latest.json"), None)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        latest = next((tmp_path / "killed").glob("checkpoints/*/state/latest.json"), None)
        if latest and json.loads(latest.read_text())["epoch"] >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert records.load_records(tmp_path / "killed") == []  # nothing counts as complete
    assert not [p for p in runs.glob("*")] if runs.exists() else True
    done = json.loads(latest.read_text())["epoch"]
    assert 2 <= done < 4

    resumed = run(compose(overrides))
    uninterrupted = run(compose(tiny_overrides(clue_dir, tmp_path / "whole", extra={"trainer.epochs": 4})))
    assert numbers(resumed["history"]) == numbers(uninterrupted["history"])
    assert resumed["best_dev_acc"] == uninterrupted["best_dev_acc"]
    assert not (tmp_path / "killed" / "checkpoints" / latest.parents[1].name / "state").exists()


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume(clue_dir, tmp_path):
    overrides = tiny_overrides(clue_dir, tmp_path / "r", extra={"trainer.epochs": 50})
    # As from a terminal: a shell starts background jobs with SIGINT ignored, and a child
    # inherits that (CI may run the tests so), so the run would never see the Ctrl-C.
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.commands.run", *overrides],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "r").glob("checkpoints/*/state/latest.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1].startswith("interrupted: no record written")
    assert records.load_records(tmp_path / "r") == []
