"""One GPU and a share of the CPU threads per parallel run under ``hydra/launcher=joblib``.

TensorFlow reads ``CUDA_VISIBLE_DEVICES``, ``TF_FORCE_GPU_ALLOW_GROWTH`` and its thread counts
from the environment once, when it starts, so :func:`pin_job` must run in the job's process
before TensorFlow is imported (it is the first thing ``experiments.run.main`` does).

Joblib's loky workers are reused from run to run, and a worker that has trained one run keeps
its TensorFlow and so its GPU. A GPU therefore belongs to a worker, not to a job number: each
worker process claims a free slot (0 .. n_jobs-1, a file lock in the sweep folder held until
the process exits) and slot k gets GPU k mod n_gpus. With n_jobs = number of GPUs, the default,
no two runs ever share a GPU, whichever worker picks up which job.

The device guard, :func:`check_device`, runs before a run downloads or builds anything: it
stops a run that would silently train on the CPU (a GPU TensorFlow cannot use; a big model
on a machine without a GPU) with one line naming the cause and the fix.

Nothing here imports TensorFlow unless ``nvidia-smi`` lists a GPU. Importing this module
registers the ``${gpu_count:}`` resolver that configs/hydra/launcher/joblib.yaml uses.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from omegaconf import OmegaConf

from experiments.errors import UserError
from experiments.machine import estimate
from experiments.machine.estimate import cpu_count

log = logging.getLogger("experiments.machine.devices")


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
    return [str(i) for i in range(len(nvidia_smi_gpus(environ)))]


def nvidia_smi(args: Sequence[str], environ: Mapping[str, str] = os.environ) -> str:
    """What ``nvidia-smi <args>`` prints, or "" without nvidia-smi (no NVIDIA driver) or if it fails."""
    smi = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if smi is None:
        return ""
    try:
        done = subprocess.run([smi, *args], capture_output=True, text=True, timeout=60, env=dict(environ))
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else ""


def nvidia_smi_gpus(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The GPUs the NVIDIA driver sees, as ``nvidia-smi -L`` lists them ("GPU 0: NVIDIA A100 ...")."""
    return [line.strip() for line in nvidia_smi(["-L"], environ).splitlines() if line.startswith("GPU ")]


def driver_version(environ: Mapping[str, str] = os.environ) -> str | None:
    """The NVIDIA driver's version (e.g. "550.54.15"), None without nvidia-smi."""
    out = nvidia_smi(["--query-gpu=driver_version", "--format=csv,noheader"], environ).split()
    return out[0] if out else None


def gpu_count(minimum: int | str = 0) -> int:
    """``${gpu_count:1}`` in a config: the number of GPUs, at least ``minimum``."""
    return max(int(minimum), len(visible_gpus()))


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
    log.info(
        "job %d: worker slot %d of %d, %s",
        hc.job.num,
        _pinned["slot"],
        _pinned["n_jobs"],
        " ".join(f"{k}={v}" for k, v in sorted(_pinned["env"].items())),
    )
    return _pinned["env"]


def _pin(hc) -> dict:
    n_jobs = int(hc.launcher.n_jobs)  # ${gpu_count:1} counts GPUs: read it before narrowing them
    claimed = claim_slot(Path(hc.sweep.dir) / ".slots", n_jobs)
    if claimed is None:  # more workers than slots: only if another sweep shares this sweep folder
        log.warning("no free worker slot of %d in %s; using the job number", n_jobs, hc.sweep.dir)
        claimed = (hc.job.num % n_jobs, None)
    slot, lock = claimed
    if "tensorflow" in sys.modules:
        log.warning(
            "TensorFlow was imported before this job's devices were set: "
            "CUDA_VISIBLE_DEVICES and thread counts may not apply"
        )
    env = assign(slot, visible_gpus(), n_jobs, cpu_count())
    os.environ.update(env)
    return {"slot": slot, "n_jobs": n_jobs, "env": env, "lock": lock}


# --- the device guard ---------------------------------------------------------------------------

DEVICES = ("auto", "gpu", "cpu")
# NVIDIA: CUDA 12.x applications run on drivers from R525 on, through minor version compatibility
# (docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html, table 1).
MIN_DRIVER = 525


def check_device(
    device: str, model_cfg, eta: Callable[[], str], key: str = "trainer.device", environ: Mapping[str, str] = os.environ
) -> str:
    """Where a run will train, "gpu" or "cpu", or a UserError if that is not what ``device`` (the value
    of ``key``: trainer.device or pretrain.device, auto | gpu | cpu) and the model (``cpu_friendly``)
    allow. ``eta()``: the phrase estimating the time on this CPU (``cpu_estimate``,
    ``pretrain_cpu_estimate``). Called before any download."""
    if device not in DEVICES:
        raise UserError(f"{key}={device} is invalid: it must be {', '.join(DEVICES)}")
    listed = nvidia_smi_gpus(environ)
    gpus = listed if listed and visible_gpus(environ) else []  # CUDA_VISIBLE_DEVICES="" / -1 hides them
    if device == "cpu":
        if gpus:
            _hide_gpus()
        return "cpu"
    if gpus:
        import tensorflow as tf  # only now: nvidia-smi says there is a GPU for it to find

        if not tf.config.list_physical_devices("GPU"):
            raise UserError(_unusable_gpu_message(gpus, tf.__version__, environ))
        return "gpu"
    hidden = " (CUDA_VISIBLE_DEVICES hides them)" if listed else ""
    if device == "gpu":
        raise UserError(
            f"{key}=gpu but this machine has no GPU{hidden or ' (nvidia-smi lists none)'}; "
            f"run on a GPU machine, or set {key}=cpu to train on the CPU"
        )
    if not model_cfg.get("cpu_friendly", False):
        raise UserError(
            f"no GPU{hidden}: {eta()}; run it on a GPU machine (`make doctor` checks "
            f"one), or add {key}=cpu to train on this CPU anyway"
        )
    return "cpu"


def pretrain_cpu_estimate(model_cfg, pretrain_cfg, task_name: str, steps: int | None) -> str:
    """One phrase: how long the pretraining of ``model_cfg`` on ``task_name`` (``steps`` steps, None
    if the corpus size is unknown) would take on this CPU: a train step of the encoder at batch
    pretrain.batch_size x pretrain.max_length (the MLM head scores 15 % of the positions only: left out)."""
    shape = estimate.model_shape(model_cfg)
    batch, seq = int(pretrain_cfg.batch_size), int(pretrain_cfg.max_length)
    flops = estimate.train_flops(shape, batch, seq)
    rate = estimate.cpu_flops_per_second()
    step = flops / rate
    how = (
        f"{flops / 1e12:.2f} TFLOP per step of {shape['num_hidden_layers']} layers x {shape['hidden_size']} at "
        f"batch {batch} x length {seq} over this CPU's measured {rate / 1e9:.0f} GFLOP/s = {step:.1f} s"
    )
    what = f"pretraining model={model_cfg.name} on {task_name}"
    if steps is None:
        return f"{what} would take about {estimate.duration(step)} per step ({how})"
    return (
        f"{what} would take up to {estimate.duration(steps * step)} on this CPU ({steps} steps; {how}; "
        f"batches padded to pretrain.max_length at most, so shorter texts take less)"
    )


def cpu_estimate(cfg) -> str:
    """One phrase: how long the run of ``cfg`` would take on this CPU, and how that was estimated
    (the run's whole config: model, method, task, trainer and data folder all count)."""
    shape = estimate.model_shape(cfg.model)
    batch, seq = int(cfg.trainer.batch_size), int(cfg.task.max_length)
    flops = estimate.train_flops(shape, batch, seq)
    rate = estimate.cpu_flops_per_second()
    step = flops / rate
    run = estimate.run_seconds(cfg, step)
    how = (
        f"{flops / 1e12:.2f} TFLOP per baseline step of {shape['num_hidden_layers']} layers x "
        f"{shape['hidden_size']} at batch {batch} x length {seq} over this CPU's measured "
        f"{rate / 1e9:.0f} GFLOP/s = {step:.1f} s, x {estimate.method_cost(cfg.method):.2f} for {cfg.method.name}"
    )
    what = f"model={cfg.model.name} method={cfg.method.name} on {cfg.task.name}"
    if run is None:
        return f"{what} would take about {estimate.duration(step * estimate.method_cost(cfg.method))} per step ({how})"
    seconds, steps = run
    return (
        f"{what} would take up to {estimate.duration(seconds)} on this CPU ({steps} steps; {how}; "
        f"batches padded to task.max_length, so shorter texts take less)"
    )


def _hide_gpus() -> None:
    """trainer.device=cpu on a GPU machine: TensorFlow must not place anything on the GPU."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # an earlier run of this process (a sweep) already started the GPU
        log.warning("trainer.device=cpu, but TensorFlow already uses the GPU in this process")


def _unusable_gpu_message(gpus: list[str], tf_version: str, environ: Mapping[str, str]) -> str:
    """Why TensorFlow sees no GPU although nvidia-smi lists one: no CUDA libraries, or the driver."""
    from importlib import metadata

    seen = f"nvidia-smi lists {len(gpus)} GPU(s) ({gpus[0].split(' (UUID')[0]}) but TensorFlow {tf_version} sees none"
    try:
        metadata.version("nvidia-cudnn-cu12")
    except metadata.PackageNotFoundError:
        return (
            f"{seen}: the CUDA 12 libraries are not installed in this environment (no nvidia-cudnn-cu12); "
            "run `make env GPU=1` to add the `gpu` extra, or set trainer.device=cpu to train on the CPU"
        )
    driver = driver_version(environ)
    major = int(driver.split(".")[0]) if driver and driver.split(".")[0].isdigit() else None
    if major is not None and major < MIN_DRIVER:
        why = f"the NVIDIA driver {driver} is too old for CUDA 12 (it needs {MIN_DRIVER} or newer)"
    else:
        why = (
            f"the CUDA 12 libraries are installed, so the driver ({driver or 'version unknown'}) could not run "
            "them (TF_CPP_MIN_LOG_LEVEL=0 shows TensorFlow's reason; `nvidia-smi` must work in this shell)"
        )
    return (
        f"{seen}: {why}; install an NVIDIA driver {MIN_DRIVER} or newer that matches the loaded kernel module, "
        "or set trainer.device=cpu to train on the CPU"
    )


OmegaConf.register_new_resolver("gpu_count", gpu_count, replace=True)
# configs/hydra/launcher/{joblib,submitit_local}.yaml share the plugins' config names so that
# `hydra/launcher=joblib` picks ours. Hydra 1.3 then merges each onto the plugin's config of that
# name (so ours only set what they change) and warns, in every job, that this matching is
# deprecated. Our files name their _target_ and keys themselves and so keep working without it.
warnings.filterwarnings(
    "ignore",
    category=UserWarning,
    message=r"\s*'hydra/launcher/(joblib|submitit_local)' is validated against ConfigStore schema",
)
