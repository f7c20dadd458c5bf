"""Scaling out: the launcher configs, the per-worker GPU and thread assignment, and tiny sweeps
through `make sweep LAUNCHER=joblib|submitit_local` that land in one results folder."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from experiments import CONFIG_DIR, records
from experiments.machine import devices, estimate
from tests.helpers.clue import make_clue
from tests.helpers.runs import sweep_command

# experiments.devices silences Hydra's notice that our joblib.yaml is merged onto the plugin's
# config of that name; pytest resets warning filters per test, so say it again here.
pytestmark = pytest.mark.filterwarnings(r"ignore:\s*'hydra/launcher/(joblib|submitit_local)' is validated:UserWarning")


# --- which GPU and how many threads a worker gets (no GPU needed) ---------------------------------


def test_workers_get_gpus_round_robin_and_an_equal_share_of_the_threads():
    envs = [devices.assign(slot, ["0", "1"], n_jobs=4, n_cpus=16) for slot in range(4)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "0", "1"]
    for e in envs:
        assert e["TF_NUM_INTRAOP_THREADS"] == e["TF_NUM_INTEROP_THREADS"] == e["OMP_NUM_THREADS"] == "4"
        assert e["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    # One job per GPU (the default): every worker its own GPU, ids taken from the visible list.
    assert [devices.assign(s, ["2", "5", "7"], 3, 12)["CUDA_VISIBLE_DEVICES"] for s in range(3)] == ["2", "5", "7"]


def test_without_a_gpu_only_the_threads_are_split():
    env = devices.assign(1, [], n_jobs=2, n_cpus=2)
    assert env == {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    assert devices.assign(0, [], n_jobs=8, n_cpus=2)["TF_NUM_INTRAOP_THREADS"] == "1"  # never 0


def test_gpus_are_counted_from_cuda_visible_devices_or_nvidia_smi(tmp_path):
    assert devices.visible_gpus({"CUDA_VISIBLE_DEVICES": "1,3"}) == ["1", "3"]
    assert devices.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert devices.visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert devices.visible_gpus({"CUDA_VISIBLE_DEVICES": "0,-1,2"}) == ["0"]  # CUDA stops at an invalid id
    assert devices.visible_gpus({"PATH": str(tmp_path)}) == []  # no nvidia-smi: no GPU
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA A100 (UUID: GPU-a)'\necho 'GPU 1: NVIDIA A100 (UUID: GPU-b)'\n")
    smi.chmod(0o755)
    assert devices.visible_gpus({"PATH": str(tmp_path)}) == ["0", "1"]


def test_gpu_count_has_a_floor(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert devices.gpu_count() == 0 and devices.gpu_count("1") == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert devices.gpu_count("1") == 3


def test_a_worker_slot_is_held_until_its_process_lets_go(tmp_path):
    a, b = devices.claim_slot(tmp_path, 2), devices.claim_slot(tmp_path, 2)
    assert (a[0], b[0]) == (0, 1)
    assert devices.claim_slot(tmp_path, 2) is None  # both GPUs busy
    a[1].close()  # the worker on slot 0 exits: its slot is free again
    c = devices.claim_slot(tmp_path, 2)
    assert c[0] == 0
    b[1].close(), c[1].close()


def test_the_entry_point_imports_no_tensorflow_before_the_devices_are_set():
    code = "import sys, experiments.commands.run; assert 'tensorflow' not in sys.modules, 'imported too early'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# --- the launcher configs --------------------------------------------------------------------------


def hydra_node(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=["paths.results_dir=/r", *overrides], return_hydra_config=True).hydra


def test_joblib_config_runs_one_job_per_gpu_by_default(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    launcher = hydra_node("hydra/launcher=joblib").launcher
    assert launcher._target_.endswith("JoblibLauncher")
    assert launcher.n_jobs == 4
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert hydra_node("hydra/launcher=joblib").launcher.n_jobs == 1
    assert hydra_node("hydra/launcher=joblib", "hydra.launcher.n_jobs=3").launcher.n_jobs == 3


def test_slurm_config_has_the_documented_keys_and_logs_in_the_sweep_folder():
    node = hydra_node("hydra/launcher=slurm")
    launcher = node.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_task == 1 and launcher.partition is None
    assert launcher.submitit_folder.startswith(node.sweep.dir + "/")
    keys = {
        "partition": "gpu",
        "gpus_per_task": 2,
        "timeout_min": 60,
        "mem_gb": 64,
        "array_parallelism": 4,
        "cpus_per_task": 4,
        "max_num_timeout": 0,
    }
    launcher = hydra_node("hydra/launcher=slurm", *(f"hydra.launcher.{k}={v}" for k, v in keys.items())).launcher
    assert {k: launcher[k] for k in keys} == keys


def test_submitit_local_config_logs_in_the_sweep_folder():
    node = hydra_node("hydra/launcher=submitit_local")
    assert node.launcher._target_.endswith("submitit_launcher.LocalLauncher")
    assert node.launcher.submitit_folder.startswith(node.sweep.dir + "/")
    assert node.launcher.timeout_min == 720


# --- tiny sweeps through the launchers -------------------------------------------------------------


def sweep(clue, results, launcher: str, *args: str, env: dict | None = None) -> str:
    """``make sweep`` of two tiny one-epoch runs (tnews baseline, seeds 0 and 1) through ``launcher``."""
    command = sweep_command(clue, results) + [f"LAUNCHER={launcher}"]
    at = next(i for i, c in enumerate(command) if c.startswith("ARGS="))
    command[at] = " ".join([command[at], *args])
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def assert_one_complete_record_per_run(results):
    found = records.load_records(results)
    assert sorted((r["method"], r["seed"]) for r in found) == [("baseline", 0), ("baseline", 1)]
    assert len(list((results / "runs").glob("*.json"))) == 2


@pytest.mark.slow
def test_joblib_sweep_runs_two_jobs_at_once_each_with_its_share_of_the_cpus(tmp_path):
    clue, results = make_clue(tmp_path / "clue", n_train=200, n_dev=50), tmp_path / "results"
    # CPU only (even where there is a GPU), two workers.
    out = sweep(clue, results, "joblib", "hydra.launcher.n_jobs=2", env={"CUDA_VISIBLE_DEVICES": ""})
    assert "Joblib.Parallel(n_jobs=2," in out
    assert_one_complete_record_per_run(results)
    threads = max(1, estimate.cpu_count() // 2)
    job_logs = sorted((results / "logs" / "multirun").glob("*/*/run.log"))
    assert len(job_logs) == 2
    for job_log in job_logs:
        [line] = [ln for ln in job_log.read_text().splitlines() if "worker slot" in ln]
        assert " of 2, " in line and f"TF_NUM_INTRAOP_THREADS={threads}" in line
        assert "CUDA_VISIBLE_DEVICES" not in line


@pytest.mark.slow
def test_submitit_local_sweep_then_joblib_resumes_in_the_same_results_folder(tmp_path):
    clue, results = make_clue(tmp_path / "clue", n_train=200, n_dev=50), tmp_path / "results"
    out = sweep(clue, results, "submitit_local")
    assert "Submitit 'local' sweep output dir" in out
    assert_one_complete_record_per_run(results)
    assert len(list((results / "logs" / "multirun").glob("*/submitit/*/*_log.out"))) == 2

    # The same sweep through another launcher: both runs are complete, none is redone.
    snapshot = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (results / "runs").glob("*.json")}
    out = sweep(clue, results, "joblib", "hydra.launcher.n_jobs=2", env={"CUDA_VISIBLE_DEVICES": ""})
    assert out.count("complete record exists, skipping") == 2
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (results / "runs").glob("*.json")} == snapshot
