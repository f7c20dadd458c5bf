"""`make sweep LAUNCHER=slurm` on a real single-node Slurm cluster (tests/slurm_cluster.py):
a two-run sweep writes both records, and a run whose time limit is hit is requeued by Slurm,
resumes from its last finished epoch and ends with the history of an uninterrupted run.

Needs root and Debian's slurmctld, slurmd, slurm-client and munge (.ci/run installs them);
skipped elsewhere, but never on CI (CI=true), where a missing piece fails the module.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from experiments import PROJECT_ROOT, records, slurm
from tests import slurm_cluster
from tests.conftest import make_clue, tiny_overrides
from tests.test_resume import numbers

# One thread per run (as cpus_per_task=1 asks; task/none does not bind CPUs), the same for the
# runs under Slurm and the reference run outside it.
THREADS = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}
CPU_JOBS = ["hydra.launcher.gpus_per_task=null", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]

# The requeued run: Slurm's shortest limit (1 min) and the signal 1 s before it. slurmctld checks
# time limits every 30 s and signals at the first check within signal_delay_s + 30 s of the limit:
# 29-59 s after a job starts; a requeued job starts ~7 s after such a check, so it gets ~52 s (README,
# A Slurm cluster, as measured). 26 epochs of 400 examples (~10 s start + ~75 s on an idle 2-core
# machine) outlast the first allocation, and each allocation finishes epochs before its signal.
REQUEUE_EPOCHS, REQUEUE_TRAIN = 26, 400
REQUEUE = ["hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=1", "hydra.launcher.max_num_timeout=5"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = slurm_cluster.missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Slurm tests: {reason}")
        pytest.skip(reason)
    cluster = slurm_cluster.Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def sweep_command(clue, results, seeds: str, extra: dict, launcher_args: list[str]) -> list[str]:
    """``make sweep TASKS=tnews METHODS=baseline SEEDS=<seeds> MODEL=tiny LAUNCHER=slurm ARGS=...``."""
    args = [o for o in tiny_overrides(clue, results, extra=extra) if o.split("=")[0] not in ("task", "method", "model")]
    return ["make", "-s", "-C", str(PROJECT_ROOT), "-o", ".venv/.synced", "sweep", "TASKS=tnews", "METHODS=baseline",
            f"SEEDS={seeds}", "MODEL=tiny", "LAUNCHER=slurm", f"PY={sys.executable}",
            f"ARGS={' '.join(args + CPU_JOBS + launcher_args)}"]


def start(command, cluster) -> subprocess.Popen:
    return subprocess.Popen(command, env={**cluster.env, **THREADS}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, cluster, results, timeout: float) -> str:
    """Wait for a ``make sweep``; on failure or time-out say what the sweep, jobs and daemons said.
    (Without accounting, submitit cannot see a job that died without a result: it would wait forever.)"""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"make sweep still running after {timeout:.0f} s\n{out[-3000:]}\n{job_logs(results)[-6000:]}\n"
                    f"{cluster.logs()}")
    assert proc.returncode == 0, f"{out[-3000:]}\n{job_logs(results)[-6000:]}\n{cluster.logs()}"
    return out


def job_logs(results) -> str:
    """Everything the Slurm jobs wrote (submitit's stdout/stderr of each job, all allocations)."""
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}"
                     for p in sorted(results.glob("logs/multirun/*/submitit/*/*_log.*")))


def test_two_run_sweep_writes_one_complete_record_per_run(cluster, tmp_path):
    clue, results = make_clue(tmp_path / "clue", n_train=200, n_dev=50), tmp_path / "results"
    proc = start(sweep_command(clue, results, "0,1", {"trainer.epochs": 1}, []), cluster)
    out = finish(proc, cluster, results, timeout=150)
    assert "Submitit 'slurm' sweep output dir" in out
    found = records.load_records(results)
    assert sorted((r["task"], r["method"], r["seed"], len(r["history"])) for r in found) == \
        [("tnews", "baseline", 0, 1), ("tnews", "baseline", 1, 1)]
    assert all(r["status"] == records.COMPLETE for r in found)
    assert len(list((results / "runs").glob("*.json"))) == 2
    # Both ran as tasks of one Slurm job array, one log pair per task.
    tasks = [re.fullmatch(r"(\d+)_(\d+)_0_log.out", p.name) for p in results.glob("logs/multirun/*/submitit/*/*_log.out")]
    assert len({m[1] for m in tasks}) == 1 and sorted(m[2] for m in tasks) == ["0", "1"], tasks
    # No accounting here: submitit's failing sacct calls show once, explained (experiments/slurm.py).
    assert set(re.findall(r"Call #(\d+) - Bypassing sacct error", out)) == {"1"}, out
    assert slurm.SACCT_NOTE in out


def test_time_limit_requeues_and_the_resumed_run_equals_an_uninterrupted_one(cluster, tmp_path):
    clue, results = make_clue(tmp_path / "clue", n_train=REQUEUE_TRAIN, n_dev=50), tmp_path / "results"
    extra = {"trainer.epochs": REQUEUE_EPOCHS}
    proc = start(sweep_command(clue, results, "0", extra, REQUEUE), cluster)
    # Meanwhile, on the other core: the same run outside Slurm, never interrupted.
    reference_dir = tmp_path / "reference"
    reference = subprocess.run(
        [sys.executable, "-m", "experiments.run", *tiny_overrides(clue, reference_dir, extra=extra),
         "trainer.skip_completed=true", "trainer.resume=true", f"hydra.run.dir={reference_dir}/hydra"],
        cwd=PROJECT_ROOT, env={**os.environ, **THREADS}, capture_output=True, text=True, timeout=400)
    assert reference.returncode == 0, reference.stderr[-3000:]
    finish(proc, cluster, results, timeout=420)

    logs = job_logs(results)
    # submitit's signal handler says this, then requeues the job (scontrol requeue), and Slurm says why it stops it.
    requeues = logs.count("Caught signal SIGUSR2")
    assert requeues >= 1 and logs.count("this job is timed-out") == requeues, logs[-4000:]
    assert len(re.findall(r"\*\*\* JOB \d+ ON \S+ CANCELLED AT \S+ DUE TO JOB REQUEUE", logs)) == requeues, logs[-4000:]
    resumed = [int(n) for n in re.findall(r"resuming after epoch (\d+) of", logs)]
    assert resumed and max(resumed) >= 1, logs[-4000:]  # an allocation started from a saved epoch

    [record] = records.load_records(results)
    [expected] = records.load_records(reference_dir)
    assert record["settings_id"] == expected["settings_id"]
    assert len(record["history"]) == REQUEUE_EPOCHS
    assert numbers(record["history"]) == numbers(expected["history"])  # dev_acc, train_loss, ... per epoch
    assert record["best_dev_acc"] == expected["best_dev_acc"] > 0.5  # 10 classes: chance is 0.1
    print(f"{requeues} requeue(s); allocations resumed after epochs {resumed}")
    print("\n".join(re.findall(r".*(?:Started JobId|Allocate JobId|Requeuing JobId|_job_complete).*",
                                (cluster.root / "log" / "slurmctld.log").read_text())))
