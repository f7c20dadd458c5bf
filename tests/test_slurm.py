"""`make sweep LAUNCHER=slurm` on a real single-node Slurm cluster (tests/helpers/slurm_cluster.py):
a two-run sweep writes both records, and a run whose time limit is hit is requeued by Slurm,
resumes from its last finished epoch and ends with the history of an uninterrupted run.

Needs root and Debian's slurmctld, slurmd, slurm-client and munge (.ci/run installs them);
skipped elsewhere, but never on CI (CI=true), where a missing piece fails the module.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments import PROJECT_ROOT, records
from experiments.machine import slurm
from tests.helpers import runs, slurm_cluster
from tests.helpers.clue import make_clue, tiny_overrides
from tests.helpers.runs import numbers

# One thread per run (as cpus_per_task=1 asks; task/none does not bind CPUs), the same for the
# runs under Slurm and the reference run outside it.
THREADS = {
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "CUDA_VISIBLE_DEVICES": "",
}
CPU_JOBS = ["hydra.launcher.gpus_per_task=null", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]

N_TRAIN = 200  # examples per epoch, in the two-run sweep and in the requeued run
EPOCHS = 4  # of the requeued run: it is stopped in its second epoch or later, and resumes

# The requeue is made to happen at a known point instead of guessed from the machine's speed. The run is
# submitted with a 10-minute limit (for submitit, a signal within a 10-minute limit is always a time-out,
# never a preemption: SignalHandler.has_timed_out in submitit/core/job_environment.py). Once its first
# epoch is saved, the test stops the job's process (SIGSTOP), so that it cannot finish, and shortens the
# job's limit with `scontrol update TimeLimit=`. slurmctld checks time limits every 30 s (PERIODIC_TIMEOUT
# in src/slurmctld/controller.c) and sends the warning signal (sbatch --signal=USR2@SIGNAL_DELAY_S) at the
# first check within SIGNAL_DELAY_S + 30 s of the end, so at least SIGNAL_DELAY_S before Slurm would kill
# the job (OverTimeLimit=0). The test sees the signal pending in /proc/<pid>/status (or slurmstepd
# continuing the process with it) and continues the process; submitit's handler requeues the job
# (scontrol requeue); the test sets the limit back, and the second allocation runs to the end. So the
# test passes whatever the load; the wait for the signal is up to about a minute (limits are minutes).
SUBMIT_LIMIT_MIN = 10
SIGNAL_DELAY_S = 60
SIGUSR2_BIT = 1 << (signal.SIGUSR2 - 1)  # in the pending-signal masks of /proc/<pid>/status


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
    return runs.sweep_command(clue, results, seeds, extra, ["LAUNCHER=slurm"], CPU_JOBS + launcher_args)


def start(command, cluster) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        env={**cluster.env, **THREADS},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, cluster, results, timeout: float) -> str:
    """Wait for a ``make sweep``; on failure or time-out say what the sweep, jobs and daemons said.
    (Without accounting, submitit cannot see a job that died without a result: it would wait forever.)"""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(
            f"make sweep still running after {timeout:.0f} s\n{out[-3000:]}\n{job_logs(results)[-6000:]}\n"
            f"{cluster.logs()}"
        )
    assert proc.returncode == 0, f"{out[-3000:]}\n{job_logs(results)[-6000:]}\n{cluster.logs()}"
    return out


def job_logs(results) -> str:
    """Everything the Slurm jobs wrote (submitit's stdout/stderr of each job, all allocations)."""
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')}"
        for p in sorted(results.glob("logs/multirun/*/submitit/*/*_log.*"))
    )


@pytest.fixture(scope="module")
def two_run_sweep(cluster, tmp_path_factory):
    """``make sweep LAUNCHER=slurm`` of two tiny two-epoch runs (seeds 0 and 1): results and output."""
    root = tmp_path_factory.mktemp("sweep")
    clue, results = make_clue(root / "clue", n_train=N_TRAIN, n_dev=50), root / "results"
    out = finish(start(sweep_command(clue, results, "0,1", {"trainer.epochs": 2}, []), cluster), cluster, results, 300)
    return results, out


@pytest.mark.slurm
def test_two_run_sweep_writes_one_complete_record_per_run(two_run_sweep):
    results, out = two_run_sweep
    assert "Submitit 'slurm' sweep output dir" in out
    found = records.load_records(results)
    assert sorted((r["task"], r["method"], r["seed"], len(r["history"])) for r in found) == [
        ("tnews", "baseline", 0, 2),
        ("tnews", "baseline", 1, 2),
    ]
    assert all(r["status"] == records.COMPLETE for r in found)
    assert len(list((results / "runs").glob("*.json"))) == 2
    # Both ran as tasks of one Slurm job array, one log pair per task.
    tasks = [
        re.fullmatch(r"(\d+)_(\d+)_0_log.out", p.name) for p in results.glob("logs/multirun/*/submitit/*/*_log.out")
    ]
    assert len({m[1] for m in tasks}) == 1 and sorted(m[2] for m in tasks) == ["0", "1"], tasks
    # No accounting here: submitit's failing sacct calls show once, explained (experiments/machine/slurm.py).
    assert set(re.findall(r"Call #(\d+) - Bypassing sacct error", out)) == {"1"}, out
    assert slurm.SACCT_NOTE in out


def wait_for(found, what: str, timeout: float, proc: subprocess.Popen | None = None, poll: float = 0.05):
    """``found()``'s first true value within ``timeout`` s; fails saying ``what`` if none, or at once if
    ``proc`` (the sweep) ends first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = found()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"make sweep ended while waiting for {what}: {proc.stdout.read()[-3000:]}")
        time.sleep(poll)
    pytest.fail(f"no {what} after {timeout:.0f} s")


def saved_epoch(results) -> int:
    """The last epoch the run saved (run_state's latest.json), 0 before the first."""
    latest = next(results.glob("checkpoints/*/state/latest.json"), None)
    return json.loads(latest.read_text())["epoch"] if latest else 0


def job_process(job: str) -> int | None:
    """The process id of the job's task (submitit's ``python -m submitit.core._submit``), from /proc."""
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        array_job, _, task = job.partition("_")
        ids = {f"SLURM_JOB_ID={job}".encode(), f"SLURM_ARRAY_JOB_ID={array_job}".encode()}
        # The task's Python, not srun, whose arguments hold the same words.
        python = "python" in Path(command[0].decode(errors="replace")).name
        in_job = ids & set(environ) and (not task or f"SLURM_ARRAY_TASK_ID={task}".encode() in environ)
        if python and b"submitit.core._submit" in command and in_job:
            return int(proc.name)
    return None


def pending(pid: int) -> int:
    """The signals waiting for ``pid`` (process- and thread-directed), as a bit mask."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    except OSError:
        return 0
    return int(fields["ShdPnd"], 16) | int(fields["SigPnd"], 16)


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped (state T in /proc/<pid>/stat)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


@pytest.mark.slurm
def test_time_limit_requeues_and_the_resumed_run_equals_an_uninterrupted_one(cluster, tmp_path):
    clue, results = make_clue(tmp_path / "clue", n_train=N_TRAIN, n_dev=50), tmp_path / "results"
    extra = {"trainer.epochs": EPOCHS}
    launcher = [
        f"hydra.launcher.timeout_min={SUBMIT_LIMIT_MIN}",
        f"hydra.launcher.signal_delay_s={SIGNAL_DELAY_S}",
        "hydra.launcher.max_num_timeout=2",
    ]
    cluster.wait_idle()  # the two-run sweep's jobs may linger a moment after their results
    started = time.time()
    proc = start(sweep_command(clue, results, "0", extra, launcher), cluster)
    # Meanwhile, on the other core: the same run outside Slurm, never interrupted.
    reference_dir = tmp_path / "reference"
    reference = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "experiments.commands.run",
            *tiny_overrides(clue, reference_dir, extra=extra),
            "trainer.skip_completed=true",
            "trainer.resume=true",
            f"hydra.run.dir={reference_dir}/hydra",
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, **THREADS},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        [job] = wait_for(
            lambda: cluster.run("squeue", "-h", "-t", "RUNNING", "-o", "%i").split(), "running job", 600, proc, poll=0.5
        )
        wait_for(lambda: saved_epoch(results) >= 1, "first saved epoch", 900, proc)
        pid = wait_for(lambda: job_process(job), "job process", 60, proc)
        os.kill(pid, signal.SIGSTOP)
        try:
            stopped_after = saved_epoch(results)  # read while stopped: the epoch the resumed run starts after
            assert stopped_after < EPOCHS, f"the run saved all {EPOCHS} epochs before it could be stopped"
            begun = time.mktime(
                time.strptime(cluster.run("squeue", "-h", "-j", job, "-o", "%S").strip(), "%Y-%m-%dT%H:%M:%S")
            )
            limit_min = math.ceil((time.time() - begun + SIGNAL_DELAY_S + 15) / 60)
            cluster.run("scontrol", "update", f"JobId={job}", f"TimeLimit={limit_min}")
            # slurmstepd may send SIGCONT with the signal (then the process runs on and handles it at once)
            signalled = wait_for(
                lambda: pending(pid) & SIGUSR2_BIT or not stopped(pid),
                "SIGUSR2 from Slurm's time limit",
                begun + 60 * limit_min - time.time(),
                proc,
            )
        finally:
            if alive(pid):
                os.kill(pid, signal.SIGCONT)
        wait_for(lambda: not alive(pid), "end of the requeued allocation's process", 120, proc)
        signalled_at = time.time() - begun
        cluster.run("scontrol", "update", f"JobId={job}", f"TimeLimit={SUBMIT_LIMIT_MIN}")
        _, errors = reference.communicate(timeout=1200)
        assert reference.returncode == 0, errors[-3000:]
        finish(proc, cluster, results, timeout=60 * SUBMIT_LIMIT_MIN + 120)
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    logs = job_logs(results)
    # The requeue: Slurm's time-limit signal, caught by submitit as a time-out, which requeues the job
    # (scontrol requeue); Slurm then stops the allocation and says why. (submitit's lines appear once
    # per log handler.) Then the second allocation resumes after the epoch saved when the job was stopped.
    assert signalled
    requeues = re.findall(r"\*\*\* JOB \d+ ON \S+ CANCELLED AT \S+ DUE TO JOB REQUEUE", logs)
    caught = set(re.findall(r"\((\S+ \S+)\) - Caught signal SIGUSR2 on \S+: this job is timed-out", logs))
    assert len(requeues) == 1 and len(caught) == 1, logs[-4000:]
    resumed = [int(n) for n in re.findall(r"resuming after epoch (\d+) of", logs)]
    assert resumed == [stopped_after], logs[-4000:]

    [record] = records.load_records(results)
    [expected] = records.load_records(reference_dir)
    assert record["settings_id"] == expected["settings_id"]
    assert len(record["history"]) == EPOCHS
    assert numbers(record["history"]) == numbers(expected["history"])  # dev_acc, train_loss, ... per epoch
    assert record["best_dev_acc"] == expected["best_dev_acc"] > 0.5  # 10 classes: chance is 0.1
    print(
        f"stopped after epoch {stopped_after}, limit {limit_min} min, requeued {signalled_at:.0f} s into the "
        f"job, resumed after epoch {resumed}, {time.time() - started:.0f} s in all"
    )
    print(
        "\n".join(
            re.findall(
                r".*(?:Started JobId|Allocate JobId|Requeuing JobId|_job_complete).*",
                (cluster.root / "log" / "slurmctld.log").read_text(),
            )
        )
    )


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
handler = SignalHandler(Env(), JobPaths(sys.argv[1], job_id="7", task_id=0), delayed)
signal.signal(signal.SIGUSR2, handler.checkpoint_and_try_requeue)
slurm.exit_at_once_when_requeued()
try:
    os.kill(os.getpid(), signal.SIGUSR2)
    time.sleep(30)
finally:
    print("unwound", flush=True)  # an exception from the handler would pass through here
"""


def test_after_submitits_requeue_the_job_process_ends_at_once_without_unwinding(tmp_path):
    """No cluster needed: submitit's own time-limit handler, our wrapper, a real SIGUSR2."""
    done = subprocess.run(
        [sys.executable, "-c", EXIT_AFTER_REQUEUE, str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 255, done.stdout + done.stderr  # sys.exit(-1), as submitit meant
    assert "requeued, timeouts left: 2" in done.stdout and "unwound" not in done.stdout, done.stdout + done.stderr
    assert (tmp_path / "7_submitted.pkl").exists()  # the checkpointed submission the requeued job reloads
