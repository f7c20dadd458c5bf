"""The GPU path as far as a machine without a GPU can check it: make's choice of the `gpu` extra,
the device guard (with a fake `nvidia-smi` on PATH), TF32 and the run record's environment."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import PROJECT_ROOT, records
from experiments.config import compose
from experiments.errors import UserError
from experiments.machine import devices, environment
from tests.helpers.clue import tiny_overrides
from tests.helpers.google_checkpoint import fixture_vocab, write_google_checkpoint

A100 = "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-2f1c0e2a-7d1b-4b7e-9d3c-0a1b2c3d4e5f)"
REAL_GPU = bool(devices.nvidia_smi_gpus())
needs_no_gpu = pytest.mark.skipif(REAL_GPU, reason="this machine has a real GPU")


def fake_smi(folder: Path, gpus: list[str], driver: str = "550.54.15") -> Path:
    """A folder holding an `nvidia-smi` that answers -L and the driver query as the real one does."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    listing = "".join(f"echo '{g}'\n" for g in gpus) if gpus else "echo 'No devices were found'; exit 6\n"
    script.write_text(
        f'#!/bin/sh\ncase "$1" in\n  -L)\n{listing}    ;;\n  --query-gpu=driver_version) echo {driver} ;;\nesac\n'
    )
    script.chmod(0o755)
    return folder


def env_with(smi_dir: Path | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "GPU")}
    if smi_dir is not None:
        env["PATH"] = f"{smi_dir}{os.pathsep}{env['PATH']}"
    return env


# --- make: the `gpu` extra when nvidia-smi lists a GPU --------------------------------------


@pytest.fixture(scope="module")
def make_dir(tmp_path_factory):
    """The Makefile and the lock in a folder without .venv: `make -n` shows the sync it would run."""
    folder = tmp_path_factory.mktemp("make")
    for name in ("Makefile", "pyproject.toml", "uv.lock"):
        shutil.copy(PROJECT_ROOT / name, folder / name)
    return folder


def make_n(folder: Path, smi_dir: Path | None, *args: str) -> list[str]:
    out = subprocess.run(
        ["make", "-n", "run", *args], cwd=folder, env=env_with(smi_dir), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if " sync " in line]


def test_make_syncs_the_gpu_extra_only_where_nvidia_smi_lists_a_gpu(make_dir, tmp_path):
    gpu, none = fake_smi(tmp_path / "gpu", [A100]), fake_smi(tmp_path / "none", [])
    assert [s.split(" sync ")[1] for s in make_n(make_dir, gpu)] == ["--frozen --extra gpu"]
    assert [s.split(" sync ")[1] for s in make_n(make_dir, none)] == ["--frozen"]
    assert [s.split(" sync ")[1] for s in make_n(make_dir, gpu, "GPU=0")] == ["--frozen"]
    assert [s.split(" sync ")[1] for s in make_n(make_dir, none, "GPU=1")] == ["--frozen --extra gpu"]
    # An environment synced without the extra: nothing to do without a GPU, a re-sync with one.
    (make_dir / ".venv").mkdir()
    (make_dir / ".venv" / ".synced").write_text("cpu\n")
    assert make_n(make_dir, none) == []
    assert [s.split(" sync ")[1] for s in make_n(make_dir, gpu)] == ["--frozen --extra gpu"]
    (make_dir / ".venv" / ".synced").write_text("gpu\n")
    assert make_n(make_dir, gpu) == []
    assert [s.split(" sync ")[1] for s in make_n(make_dir, none)] == ["--frozen"]


def test_lock_holds_the_cuda_wheels_of_the_gpu_extra():
    lock = (PROJECT_ROOT / "uv.lock").read_text()
    for wheel in ("nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-cuda-nvcc-cu12", "nvidia-nccl-cu12"):
        assert f'name = "{wheel}"' in lock
    assert 'gpu = [\n    { name = "tensorflow", extra = ["and-cuda"]' in lock


# --- the device guard ----------------------------------------------------------------------------


def cli(overrides: list[str], smi_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "experiments.commands.run", *overrides],
        cwd=PROJECT_ROOT,
        env=env_with(smi_dir),
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_line_error(out: subprocess.CompletedProcess) -> str:
    """The last line of stderr (TensorFlow's own start-up log lines may come before it)."""
    assert out.returncode == 2, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in out.stderr, out.stderr[-2000:]
    return last


@pytest.mark.slow
@needs_no_gpu
def test_gpu_that_tensorflow_cannot_use_stops_the_run(clue_dir, tmp_path):
    import tensorflow as tf

    line = one_line_error(cli(tiny_overrides(clue_dir, tmp_path / "r"), fake_smi(tmp_path / "bin", [A100])))
    assert line == (
        f"error: nvidia-smi lists 1 GPU(s) (GPU 0: NVIDIA A100-SXM4-40GB) but TensorFlow {tf.__version__} "
        "sees none: the CUDA 12 libraries are not installed in this environment (no nvidia-cudnn-cu12); "
        "run `make env GPU=1` to add the `gpu` extra, or set trainer.device=cpu to train on the CPU"
    )
    assert not (tmp_path / "r" / "runs").exists()


@needs_no_gpu
def test_big_model_without_gpu_stops_before_downloading_with_an_estimate(clue_dir, tmp_path):
    overrides = [
        f"paths.clue_dir={tmp_path / 'empty'}",
        f"paths.models_dir={tmp_path / 'models'}",
        f"paths.results_dir={tmp_path / 'r'}",
        "download.auto=true",
        "model.url=http://127.0.0.1:9/b.zip",
        "download.clue_base_url=http://127.0.0.1:9",
        "method=fgm",
        "task.max_train_samples=1000",
    ]
    line = one_line_error(cli(overrides, fake_smi(tmp_path / "bin", [])))
    steps = 10 * math.ceil(1000 / 32)  # TNEWS's 10 epochs of 1000 examples in batches of 32
    assert line.startswith("error: no GPU: model=bert_base method=fgm on tnews would take up to ")
    assert f"({steps} steps; 2.15 TFLOP per baseline step of 12 layers x 768 at batch 32 x length 128" in line
    assert line.endswith("or add trainer.device=cpu to train on this CPU anyway")
    assert not (tmp_path / "empty").exists() and not (tmp_path / "models").exists()


def guard(cfg, environ):
    """The device guard as a run calls it."""
    return devices.check_device(cfg.trainer.device, cfg.model, lambda: devices.cpu_estimate(cfg), environ=environ)


def test_device_gpu_without_a_gpu_is_an_error(tiny_cfg, tmp_path):
    environ = env_with(fake_smi(tmp_path / "bin", []))
    assert guard(tiny_cfg(), environ) == "cpu"  # tiny runs anywhere
    with pytest.raises(UserError, match=r"^trainer.device=gpu but this machine has no GPU \(nvidia-smi lists none\)"):
        guard(tiny_cfg(extra={"trainer.device": "gpu"}), environ)
    with pytest.raises(UserError, match="CUDA_VISIBLE_DEVICES hides them"):
        guard(
            tiny_cfg(extra={"trainer.device": "gpu"}),
            {**env_with(fake_smi(tmp_path / "gpu", [A100])), "CUDA_VISIBLE_DEVICES": "-1"},
        )
    with pytest.raises(UserError, match="trainer.device=tpu is invalid: it must be auto, gpu, cpu"):
        guard(tiny_cfg(extra={"trainer.device": "tpu"}), environ)


def test_old_driver_is_named_when_the_cuda_wheels_are_there(monkeypatch, tmp_path):
    from importlib import metadata

    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "9.28.0.42" if name == "nvidia-cudnn-cu12" else real(name))
    environ = env_with(fake_smi(tmp_path / "bin", [A100], driver="470.82.01"))
    message = devices._unusable_gpu_message([A100], "2.21.0", environ)
    assert "the NVIDIA driver 470.82.01 is too old for CUDA 12 (it needs 525 or newer)" in message


@pytest.mark.slow
@needs_no_gpu
def test_checkpoint_model_trains_on_the_cpu_with_device_cpu(clue_dir, tmp_path):
    """A model that is not cpu_friendly (bert_base's config, a tiny checkpoint in Google's layout)
    trains with trainer.device=cpu; its record tells the numerics it ran with."""
    import tensorflow as tf

    from experiments.commands.run import run

    write_google_checkpoint(tmp_path / "ckpt", fixture_vocab())
    overrides = [
        o
        for o in tiny_overrides(clue_dir, tmp_path / "r", extra={"trainer.epochs": 1})
        if not o.startswith(("model", "trainer.learning_rate"))
    ]
    cfg = compose(
        [
            *overrides,
            "model=bert_base",
            f"model.checkpoint_dir={tmp_path / 'ckpt'}",
            "trainer.device=cpu",
            "task.max_train_samples=64",
            "task.max_dev_samples=32",
        ]
    )
    record = run(cfg)
    env = record["environment"]
    build = tf.sysconfig.get_build_info()
    assert record["status"] == records.COMPLETE and record["train_samples"] == 64
    assert (env["tf_build_cuda"], env["tf_build_cudnn"]) == (build.get("cuda_version"), build.get("cudnn_version"))
    assert env["tf32"] is True and env["xla"] is False and env["precision"] == "float32"
    assert env["deterministic"] is True and env["nvidia_driver"] is None


def test_tf32_switch_is_what_tensorflow_reports():
    import tensorflow as tf

    try:
        environment.set_tf32(False)
        assert tf.config.experimental.tensor_float_32_execution_enabled() is False
        assert environment.describe()["tf32"] is False
    finally:
        environment.set_tf32(True)
    assert environment.describe()["tf32"] is True


def test_device_and_cpu_friendly_do_not_change_a_runs_settings(tiny_cfg):
    from omegaconf import OmegaConf

    a = OmegaConf.to_container(tiny_cfg(), resolve=True)
    b = OmegaConf.to_container(tiny_cfg(extra={"trainer.device": "cpu", "model.cpu_friendly": False}), resolve=True)
    c = OmegaConf.to_container(tiny_cfg(extra={"trainer.tf32": False}), resolve=True)
    assert records.settings_id(a) == records.settings_id(b) != records.settings_id(c)
