"""make sweep: a Hydra multirun that, killed part-way and started again, runs only what is missing."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from experiments import records
from tests.helpers.clue import make_clue
from tests.helpers.runs import sweep_command


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_without_recomputing(tmp_path):
    clue, results = make_clue(tmp_path / "clue"), tmp_path / "results"
    runs = results / "runs"
    command = sweep_command(clue, results)

    # Start the sweep and kill it (the whole process group, hard) as soon as the first record lands.
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    try:
        while not list(runs.glob("*.json")) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    [first] = list(runs.glob("*.json"))  # the second run was killed: nothing of it counts as complete
    assert len(records.load_records(results)) == 1 and "_seed0_" in first.name
    before = (first.read_bytes(), first.stat().st_mtime_ns)

    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    found = records.load_records(results)
    assert sorted((r["method"], r["seed"]) for r in found) == [("baseline", 0), ("baseline", 1)]
    assert len(list(runs.glob("*.json"))) == 2
    assert (first.read_bytes(), first.stat().st_mtime_ns) == before  # the first run was not redone
    assert (done.stdout + done.stderr).count("complete record exists, skipping") == 1

    # A third time: nothing left to run, nothing touched.
    snapshot = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in runs.glob("*.json")}
    again = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (again.stdout + again.stderr).count("complete record exists, skipping") == 2
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in runs.glob("*.json")} == snapshot
