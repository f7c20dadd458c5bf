"""One GPU and a share of the CPU threads per parallel run under ``hydra/launcher=joblib``.

TensorFlow reads ``CUDA_VISIBLE_DEVICES``, ``TF_FORCE_GPU_ALLOW_GROWTH`` and its thread counts
from the environment once, when it starts, so :func:`pin_job` must run in the job's process
before TensorFlow is imported (it is the first thing ``experiments.run.main`` does).

Joblib's loky workers are reused from run to run, and a worker that has trained one run keeps
its TensorFlow and so its GPU. A GPU therefore belongs to a worker, not to a job number: each
worker process claims a free slot (0 .. n_jobs-1, a file lock in the sweep folder held until
the process exits) and slot k gets GPU k mod n_gpus. With n_jobs = number of GPUs, the default,
no two runs ever share a GPU, whichever worker picks up which job.

Nothing here imports TensorFlow. Importing this module registers the ``${gpu_count:}`` resolver
that configs/hydra/launcher/joblib.yaml uses.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import OmegaConf

log = logging.getLogger("experiments.devices")


def visible_gpus(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The ids of the GPUs this process may use, found without importing TensorFlow:
    ``CUDA_VISIBLE_DEVICES`` if set (as Slurm or the user set it), else ``nvidia-smi -L``."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        ids = []
        for part in environ["CUDA_VISIBLE_DEVICES"].split(","):
            if not part.strip() or part.strip().startswith("-"):
                break  # CUDA ignores everything from the first invalid id on ("-1" hides all)
            ids.append(part.strip())
        return ids
    smi = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i in range(sum(line.startswith("GPU ") for line in out.splitlines()))]


def gpu_count(minimum: int | str = 0) -> int:
    """``${gpu_count:1}`` in a config: the number of GPUs, at least ``minimum``."""
    return max(int(minimum), len(visible_gpus()))


def cpu_count() -> int:
    """CPUs this process may run on (respects taskset and Slurm/cgroup CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def assign(slot: int, gpus: Sequence[str], n_jobs: int, n_cpus: int) -> dict[str, str]:
    """The environment of the run in worker ``slot`` of ``n_jobs`` parallel workers: GPU
    ``gpus[slot mod len(gpus)]`` (round robin, so more jobs than GPUs share them) and an equal
    share of the CPUs for TensorFlow's and OpenMP's thread pools. Without GPUs, only threads."""
    threads = str(max(1, n_cpus // max(1, n_jobs)))
    env = {"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads, "OMP_NUM_THREADS": threads}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
        # Allocate GPU memory as needed instead of all of it up front: runs sharing a GPU then fit.
        env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    return env


def claim_slot(lock_dir: Path, n_slots: int):
    """Lock the lowest free slot file in ``lock_dir``; return (slot, open file) or None if all are
    taken. The lock lasts while the file stays open, i.e. at most until the process exits."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for slot in range(n_slots):
        f = open(lock_dir / f"slot{slot}.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        return slot, f
    return None


_pinned: dict | None = None  # this process's assignment; kept with its lock for the process's life


def pin_job() -> dict[str, str]:
    """Under the joblib launcher, give this process its GPU and thread share (once per process)
    and return the environment set. Slurm and submitit pick the GPUs themselves."""
    global _pinned
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    target = str(OmegaConf.select(hc, "launcher._target_", default=""))
    if target.endswith("LocalLauncher"):  # submitit_local starts every run at once, all on GPU 0
        os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
        return {"TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    if not target.endswith("JoblibLauncher"):
        return {}
    if _pinned is None:
        _pinned = _pin(hc)
    # A reused worker keeps its slot: its TensorFlow, if started, already uses that GPU.
    log.info("job %d: worker slot %d of %d, %s", hc.job.num, _pinned["slot"], _pinned["n_jobs"],
             " ".join(f"{k}={v}" for k, v in sorted(_pinned["env"].items())))
    return _pinned["env"]


def _pin(hc) -> dict:
    n_jobs = int(hc.launcher.n_jobs)  # ${gpu_count:1} counts GPUs: read it before narrowing them
    claimed = claim_slot(Path(hc.sweep.dir) / ".slots", n_jobs)
    if claimed is None:  # more workers than slots: only if another sweep shares this sweep folder
        log.warning("no free worker slot of %d in %s; using the job number", n_jobs, hc.sweep.dir)
        claimed = (hc.job.num % n_jobs, None)
    slot, lock = claimed
    if "tensorflow" in sys.modules:
        log.warning("TensorFlow was imported before this job's devices were set: "
                    "CUDA_VISIBLE_DEVICES and thread counts may not apply")
    env = assign(slot, visible_gpus(), n_jobs, cpu_count())
    os.environ.update(env)
    return {"slot": slot, "n_jobs": n_jobs, "env": env, "lock": lock}


OmegaConf.register_new_resolver("gpu_count", gpu_count, replace=True)
# configs/hydra/launcher/{joblib,submitit_local}.yaml share the plugins' config names so that
# `hydra/launcher=joblib` picks ours. Hydra 1.3 then merges each onto the plugin's config of that
# name (so ours only set what they change) and warns, in every job, that this matching is
# deprecated. Our files name their _target_ and keys themselves and so keep working without it.
warnings.filterwarnings("ignore", category=UserWarning,
                        message=r"\s*'hydra/launcher/(joblib|submitit_local)' is validated against ConfigStore schema")
