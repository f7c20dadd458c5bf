"""`make sweep LAUNCHER=slurm` on a real single-node Slurm cluster (tests/helpers/slurm_cluster.py):
a two-run sweep writes both records, and a run whose time limit is hit is requeued by Slurm,
resumes from its last finished epoch and ends with the history of an uninterrupted run.

Needs root and Debian's slurmctld, slurmd, slurm-client and munge (.ci/run installs them);
skipped elsewhere, but never on CI (CI=true), where a missing piece fails the module.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from experiments import PROJECT_ROOT
from experiments import records
from experiments.machine import slurm
from tests.helpers import slurm_cluster
from tests.helpers.clue import make_clue, tiny_overrides
from tests.helpers.runs import numbers

# One thread per run (as cpus_per_task=1 asks; task/none does not bind CPUs), the same for the
# runs under Slurm and the reference run outside it.
THREADS = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}
CPU_JOBS = ["hydra.launcher.gpus_per_task=null", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]

N_TRAIN = 200  # examples per epoch, in the two-run sweep and in the requeued run

# The requeued run gets Slurm's shortest time limit that still lets it finish epochs between its
# start and its signal, and enough epochs to outlast that limit; both are computed from the speed
# of the two-run sweep on this machine (an idle 2-core machine: 1 minute and ~40 epochs). With
# signal_delay_s=1, slurmctld (which checks time limits every 30 s) signals a job 60*timeout_min-31
# to 60*timeout_min-1 s after it starts, and a requeued job at ~60*timeout_min-8 s (README, A Slurm
# cluster, as measured).
SIGNAL_DELAY_S = 1


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


@pytest.fixture(scope="module")
def two_run_sweep(cluster, tmp_path_factory):
    """``make sweep LAUNCHER=slurm`` of two tiny two-epoch runs (seeds 0 and 1): results and output."""
    root = tmp_path_factory.mktemp("sweep")
    clue, results = make_clue(root / "clue", n_train=N_TRAIN, n_dev=50), root / "results"
    out = finish(start(sweep_command(clue, results, "0,1", {"trainer.epochs": 2}, []), cluster), cluster, results, 300)
    return results, out


def test_two_run_sweep_writes_one_complete_record_per_run(two_run_sweep):
    results, out = two_run_sweep
    assert "Submitit 'slurm' sweep output dir" in out
    found = records.load_records(results)
    assert sorted((r["task"], r["method"], r["seed"], len(r["history"])) for r in found) == \
        [("tnews", "baseline", 0, 2), ("tnews", "baseline", 1, 2)]
    assert all(r["status"] == records.COMPLETE for r in found)
    assert len(list((results / "runs").glob("*.json"))) == 2
    # Both ran as tasks of one Slurm job array, one log pair per task.
    tasks = [re.fullmatch(r"(\d+)_(\d+)_0_log.out", p.name) for p in results.glob("logs/multirun/*/submitit/*/*_log.out")]
    assert len({m[1] for m in tasks}) == 1 and sorted(m[2] for m in tasks) == ["0", "1"], tasks
    # No accounting here: submitit's failing sacct calls show once, explained (experiments/machine/slurm.py).
    assert set(re.findall(r"Call #(\d+) - Bypassing sacct error", out)) == {"1"}, out
    assert slurm.SACCT_NOTE in out


def stamp(line: str) -> float:
    """The time of a submitit ("(2026-11-26 04:40:13,652)") or Hydra ("[2026-11-26 04:40:49,777]") log line."""
    found = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})", line)
    return time.mktime(time.strptime(found[1], "%Y-%m-%d %H:%M:%S")) + int(found[2]) / 1000


def requeue_settings(results) -> dict:
    """Time limit and epochs for the requeued run, from the two-run sweep: its jobs' start (job
    start to training), first epoch (with tracing) and second epoch, the slowest of the two jobs."""
    starts = []
    for log in results.glob("logs/multirun/*/submitit/*/*_log.out"):
        lines = log.read_text().splitlines()
        begun = stamp(next(ln for ln in lines if "Starting with JobEnvironment" in ln))
        training = stamp(next(ln for ln in lines if "experiments.commands.run][INFO] - training " in ln))
        starts.append(training - begun)
    histories = [r["history"] for r in records.load_records(results)]
    start_s = max(starts)
    first, epoch = max(h[0]["seconds"] for h in histories), max(h[1]["seconds"] for h in histories)
    fastest = min(h[1]["seconds"] for h in histories)
    # The earliest signal comes after a job's start and two epochs, with 20 % to spare.
    timeout_min = 1
    while 60 * timeout_min - SIGNAL_DELAY_S - 30 < 1.2 * (start_s + first + epoch):
        timeout_min += 1
    # The run outlasts the latest first signal by 50 %, counted in the fastest epoch seen: epoch times
    # vary with the machine's load, and a run that ends inside its time limit tests nothing (a fresh
    # clone beside a pretraining once measured slow epochs here, then ran fast ones and never requeued).
    epochs = max(6, 1 + math.ceil(1.5 * (60 * timeout_min - SIGNAL_DELAY_S - start_s - first) / fastest))
    return {"timeout_min": timeout_min, "epochs": epochs,
            "measured": f"start {start_s:.0f} s, first epoch {first:.1f} s, epoch {epoch:.1f} s"}


def test_time_limit_requeues_and_the_resumed_run_equals_an_uninterrupted_one(cluster, two_run_sweep, tmp_path):
    plan = requeue_settings(two_run_sweep[0])
    clue, results = make_clue(tmp_path / "clue", n_train=N_TRAIN, n_dev=50), tmp_path / "results"
    extra = {"trainer.epochs": plan["epochs"]}
    launcher = [f"hydra.launcher.timeout_min={plan['timeout_min']}", f"hydra.launcher.signal_delay_s={SIGNAL_DELAY_S}",
                "hydra.launcher.max_num_timeout=6"]
    started = time.time()
    proc = start(sweep_command(clue, results, "0", extra, launcher), cluster)
    # Meanwhile, on the other core: the same run outside Slurm, never interrupted.
    reference_dir = tmp_path / "reference"
    reference = subprocess.run(
        [sys.executable, "-m", "experiments.commands.run", *tiny_overrides(clue, reference_dir, extra=extra),
         "trainer.skip_completed=true", "trainer.resume=true", f"hydra.run.dir={reference_dir}/hydra"],
        cwd=PROJECT_ROOT, env={**os.environ, **THREADS}, capture_output=True, text=True, timeout=1200)
    assert reference.returncode == 0, reference.stderr[-3000:]
    finish(proc, cluster, results, timeout=7 * 60 * plan["timeout_min"] + 120)

    logs = job_logs(results)
    # Each requeue: Slurm's time-limit signal, caught by submitit, which requeues the job (scontrol
    # requeue); Slurm then stops the allocation and says why. (submitit's lines appear once per log handler.)
    requeues = len(re.findall(r"\*\*\* JOB \d+ ON \S+ CANCELLED AT \S+ DUE TO JOB REQUEUE", logs))
    caught = set(re.findall(r"\((\S+ \S+)\) - Caught signal SIGUSR2 on \S+: this job is timed-out", logs))
    assert requeues >= 1 and len(caught) == requeues, logs[-4000:]
    resumed = [int(n) for n in re.findall(r"resuming after epoch (\d+) of", logs)]
    assert resumed and max(resumed) >= 1, logs[-4000:]  # an allocation started from a saved epoch

    [record] = records.load_records(results)
    [expected] = records.load_records(reference_dir)
    assert record["settings_id"] == expected["settings_id"]
    assert len(record["history"]) == plan["epochs"]
    assert numbers(record["history"]) == numbers(expected["history"])  # dev_acc, train_loss, ... per epoch
    assert record["best_dev_acc"] == expected["best_dev_acc"] > 0.5  # 10 classes: chance is 0.1
    print(f"{plan}: {requeues} requeue(s), allocations resumed after epochs {resumed}, "
          f"{time.time() - started:.0f} s under Slurm")
    print("\n".join(re.findall(r".*(?:Started JobId|Allocate JobId|Requeuing JobId|_job_complete).*",
                                (cluster.root / "log" / "slurmctld.log").read_text())))


EXIT_AFTER_REQUEUE = """
import os, signal, sys, time
from submitit.core.job_environment import SignalHandler
from submitit.core.utils import DelayedSubmission, JobPaths
from experiments.machine import slurm

class Env:  # in place of submitit's SlurmJobEnvironment, whose _requeue calls scontrol requeue
    global_rank = 0
    def _requeue(self, countdown):
        print("requeued, timeouts left:", countdown, flush=True)

class Run:
    def __call__(self):
        pass
    def checkpoint(self):
        return DelayedSubmission(self)

delayed = DelayedSubmission(Run())
delayed.set_timeout(1, 3)
signal.signal(signal.SIGUSR2, SignalHandler(Env(), JobPaths(sys.argv[1], job_id="7", task_id=0), delayed).checkpoint_and_try_requeue)
slurm.exit_at_once_when_requeued()
try:
    os.kill(os.getpid(), signal.SIGUSR2)
    time.sleep(30)
finally:
    print("unwound", flush=True)  # an exception from the handler would pass through here
"""


def test_after_submitits_requeue_the_job_process_ends_at_once_without_unwinding(tmp_path):
    """No cluster needed: submitit's own time-limit handler, our wrapper, a real SIGUSR2."""
    done = subprocess.run([sys.executable, "-c", EXIT_AFTER_REQUEUE, str(tmp_path)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 255, done.stdout + done.stderr  # sys.exit(-1), as submitit meant
    assert "requeued, timeouts left: 2" in done.stdout and "unwound" not in done.stdout, done.stdout + done.stderr
    assert (tmp_path / "7_submitted.pkl").exists()  # the checkpointed submission the requeued job reloads
