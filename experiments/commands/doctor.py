"""`make doctor`: is this machine ready for a sweep? Checks in one command, before days of GPU time.

    python -m experiments.commands.doctor [--tasks iflytek,tnews --methods baseline,fgm,gp --seeds 0,1,2,3,4]
                                          [overrides]

Prints the software (Python, TensorFlow, the CUDA/cuDNN TensorFlow was built with), the NVIDIA
driver, every GPU (name, memory, compute capability, fp16/bf16, whether the wheel has kernels
for it), TF32, whether the data and the checkpoint are present and verified; then, with the
configured trainer.precision / jit_compile / deterministic / tf32, a few train steps of every
method on random weights (a BERT-base-shaped model on a GPU, a small one on a CPU): the loss
must be finite, the embedding matrix must come back bit for bit after FGM's and PGD's
perturbations, the time and peak GPU memory of a step are shown; then `make pretrain`'s
masked-LM step on the same shape (a finite loss). A checkpoint folder that `make pretrain`
wrote is named with its pretraining. Last, the estimated time of
the sweep grid (make's TASKS x METHODS x SEEDS). Every failed check ends with its fix; the
exit code is 1 if any failed.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from experiments import config, records
from experiments.commands import bench, cli
from experiments.data import fetch, hub
from experiments.errors import UserError
from experiments.machine import devices, estimate
from experiments.model import hf_format, release

OK, NOTE, FAIL = "ok  ", "note", "FAIL"


class Report:
    def __init__(self):
        self.failures = 0

    def line(self, status: str, what: str, detail: str, fix: str | None = None) -> None:
        self.failures += status == FAIL
        print(f"{status}  {what}: {detail}" + (f"\n      fix: {fix}" if fix else ""), flush=True)

    def section(self, title: str) -> None:
        print(f"\n{title}", flush=True)


def arguments():
    p = cli.parser("experiments.commands.doctor", __doc__, "Hydra overrides (model=, trainer.*), as for a run")
    p.add_argument("--tasks", default="iflytek,tnews", help="the sweep grid's tasks (make's TASKS)")
    p.add_argument("--methods", default="baseline,fgm,gp", help="the sweep grid's methods (make's METHODS)")
    p.add_argument("--seeds", default="0,1,2,3,4", help="the sweep grid's seeds (make's SEEDS)")
    p.add_argument(
        "--check-methods", default=",".join(bench.METHODS), help="methods whose train steps are checked (default: all)"
    )
    p.add_argument("--steps", type=int, default=2, help="timed steps per method, after one untimed")
    return p


def main(argv=None) -> int:
    """0 when every check passed, 1 when one failed (2: a mistake in the arguments)."""
    return cli.main(arguments(), doctor, argv)


def doctor(args) -> int:
    cfg = cli.compose(args.overrides)
    report = Report()
    started = time.perf_counter()
    gpus = check_software_and_gpus(report, cfg)
    check_files(report, cfg, args.tasks.split(","), args.overrides)
    step_seconds = check_train_steps(report, cfg, gpus, [m for m in args.check_methods.split(",") if m], args.steps)
    estimate_grid(report, cfg, gpus, args, step_seconds)
    print(
        f"\n{'all checks passed' if not report.failures else f'{report.failures} check(s) FAILED'} "
        f"({time.perf_counter() - started:.0f} s)"
    )
    return 1 if report.failures else 0


# --- software, driver, GPUs -------------------------------------------------------------------------


def check_software_and_gpus(report: Report, cfg) -> list:
    """Print what is installed and seen; return TensorFlow's GPUs."""
    import tensorflow as tf

    from experiments.machine import environment

    report.section("software")
    build = tf.sysconfig.get_build_info()
    report.line(OK, "python", platform.python_version())
    report.line(
        OK,
        "tensorflow",
        f"{tf.__version__}, built with CUDA {build.get('cuda_version')} / "
        f"cuDNN {build.get('cudnn_version')}, kernels for "
        f"{', '.join(build.get('cuda_compute_capabilities', []))}",
    )
    try:
        wheels = f"installed (nvidia-cudnn-cu12 {metadata.version('nvidia-cudnn-cu12')})"
    except metadata.PackageNotFoundError:
        wheels = "not installed (CPU only; `make env GPU=1` adds them)"
    report.line(OK, "CUDA wheels (gpu extra)", wheels)

    report.section("GPUs")
    listed, driver = devices.nvidia_smi_gpus(), devices.driver_version()
    if not listed:
        report.line(NOTE, "nvidia-smi", "lists no GPU (no NVIDIA driver, or no GPU): runs train on the CPU")
        if not OmegaConf.select(cfg, "model.cpu_friendly", default=False):
            report.line(
                NOTE,
                f"model={cfg.model.name}",
                "not cpu_friendly: `make run` (and `make pretrain`) stop here "
                "with an estimate of its time unless given trainer.device=cpu (pretrain.device=cpu)",
            )
    else:
        major = int(driver.split(".")[0]) if driver and driver.split(".")[0].isdigit() else None
        too_old = major is not None and major < devices.MIN_DRIVER
        report.line(
            FAIL if too_old else OK,
            "driver",
            f"{driver}, {len(listed)} GPU(s) listed",
            f"install an NVIDIA driver {devices.MIN_DRIVER} or newer (CUDA 12)" if too_old else None,
        )
    environment.set_tf32(cfg.trainer.tf32)
    tf_gpus = tf.config.list_physical_devices("GPU") if devices.visible_gpus() else []
    if listed and devices.visible_gpus() and not tf_gpus:
        message = devices._unusable_gpu_message(listed, tf.__version__, os.environ)
        seen, _, fix = message.partition("; ")
        report.line(FAIL, "tensorflow's GPUs", seen, fix)
    memory = _memory_by_index()
    for i, gpu in enumerate(tf_gpus):
        details = tf.config.experimental.get_device_details(gpu)
        cc = details.get("compute_capability") or (0, 0)
        report.line(
            *describe_gpu(
                i, details.get("device_name", gpu.name), cc, memory.get(i), build.get("cuda_compute_capabilities", [])
            )
        )
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    report.line(
        OK,
        "TF32",
        f"{'on' if tf32 else 'off'} (trainer.tf32={cfg.trainer.tf32}; float32 matmuls "
        f"round inputs to 10 mantissa bits on Ampere and newer GPUs when on)",
    )
    return tf_gpus


def describe_gpu(index: int, name: str, cc: tuple, memory_mib: str | None, built_for: list[str]):
    """(status, what, detail, fix) of one GPU. fp16 tensor cores from compute capability 7.0
    (tf_keras/src/mixed_precision/device_compatibility_check.py warns below it); bf16 and TF32
    from 8.0, Ampere (tensorflow/python/framework/config.py on TF32). A GPU without a binary
    kernel (sm_XY) of its major version in the wheel runs the compute_90 PTX, compiled by the
    driver at the first start (minutes; cached in ~/.nv/ComputeCache)."""
    major, minor = cc
    sass = [int(c[3:]) for c in built_for if c.startswith("sm_")]
    ptx = [int(c[8:]) for c in built_for if c.startswith("compute_")]
    binary = any(s // 10 == major and s <= major * 10 + minor for s in sass)
    jit = not binary and any(p <= major * 10 + minor for p in ptx)
    detail = (
        f"{name}, {memory_mib or '? MiB'}, compute capability {major}.{minor}; "
        f"fp16 {'yes' if cc >= (7, 0) else 'slow'}, bf16 {'yes' if cc >= (8, 0) else 'no'}; "
        + (
            "binary kernels in the wheel"
            if binary
            else "kernels JIT-compiled from PTX at the first start (minutes; keep ~/.nv/ComputeCache)"
            if jit
            else "no kernels for it in this TensorFlow"
        )
    )
    if not binary and not jit:
        return FAIL, f"GPU {index}", detail, "this GPU is older than TensorFlow 2.21 supports: use another GPU"
    return OK, f"GPU {index}", detail, None


def _memory_by_index() -> dict[int, str]:
    out = devices.nvidia_smi(["--query-gpu=memory.total", "--format=csv,noheader"])
    ids = devices.visible_gpus()
    rows = [line.strip() for line in out.splitlines() if line.strip()]
    return {i: rows[int(g)] for i, g in enumerate(ids) if g.isdigit() and int(g) < len(rows)}


# --- data and checkpoint ----------------------------------------------------------------------------


def check_files(report: Report, cfg, tasks: list[str], overrides: list[str]) -> None:
    report.section("data and checkpoint")
    targets = []
    for task in tasks:
        task_cfg = config.compose([*overrides, f"task={task}"]).task
        targets.append(
            (
                f"{task} data",
                fetch.task_target(cfg.paths.clue_dir, task_cfg, cfg.download),
                f"`make data TASKS={task}` (make run fetches it too)",
            )
        )
    if cfg.model.checkpoint_dir is not None:
        with contextlib.suppress(UserError):  # a Hub model not cached yet: the note below says to fetch it
            hub.resolve(cfg.model)
        folder = Path(cfg.model.checkpoint_dir)
        if folder.is_dir() and release.is_hf(cfg.model):  # a Hugging Face folder (docs/models.md)
            weights = hf_format.weight_file(folder)
            report.line(
                OK,
                f"{cfg.model.name} checkpoint",
                f"{folder}: a Hugging Face folder, {weights.name} (sha256 {records.file_sha256(weights)[:16]}...)",
            )
        else:
            targets.append(
                (
                    f"{cfg.model.name} checkpoint",
                    fetch.model_target(cfg.model, cfg.download),
                    f"`make model MODEL={cfg.model.name}` (make run fetches it too)",
                )
            )
        try:
            origin = records.pretrained_from(cfg.model.checkpoint_dir)  # a `make pretrain` folder
        except UserError as err:
            report.line(FAIL, f"{cfg.model.name} checkpoint", str(err).split("; ")[0], "pretrain again")
        else:
            if origin is not None:
                report.line(
                    OK,
                    f"{cfg.model.name} checkpoint",
                    f"made by `make pretrain`: {origin['id']}, "
                    f"{origin['steps']} steps on {'+'.join(origin['tasks'])} (runs record model.pretrained)",
                )
    for what, target, get in targets:
        if not target.dest.exists():
            report.line(NOTE, what, f"{target.dest} not there yet: {get}")
            continue
        try:
            checked, total = fetch.verify(target, fix=f"delete {target.dest}/ and run {get.split(' (')[0]}")
        except UserError as err:
            message, _, fix = str(err).partition("; ")
            report.line(FAIL, what, message, fix)
        else:
            report.line(OK, what, f"{target.dest}: {total} files, {checked} match their known sha256")


# --- train steps ------------------------------------------------------------------------------------

# On a GPU the configured model's own shape (BERT-base: 12 layers x 768) at a run's batch and
# length; on a CPU one layer of the tiny model at a small batch, so that it takes seconds.
GPU_STEPS = {"batch": 32, "seq": 128}
CPU_STEPS = {"model": "tiny", "layers": 1, "batch": 8, "seq": 32}


def check_train_steps(report: Report, cfg, gpus: list, names: list[str], n_steps: int) -> dict[str, float]:
    """Train steps of each method; return its median seconds per step (on the shape checked)."""
    import tensorflow as tf

    from experiments.machine import environment
    from experiments.model import encoder

    plan = GPU_STEPS if gpus else CPU_STEPS
    model_cfg = cfg.model if gpus else config.compose(["model=" + CPU_STEPS["model"]]).model
    t = cfg.trainer
    tf.get_logger().setLevel("ERROR")
    environment.seed_everything(0, deterministic=t.deterministic)
    model, shape = bench.build_model(model_cfg, plan.get("layers"), t.precision)
    report.section(
        f"train steps: model={model_cfg.name} shape, {shape['num_hidden_layers']} layer(s) x "
        f"{shape['hidden_size']}, batch {plan['batch']} x {plan['seq']}, random weights, on "
        f"{'GPU 0' if gpus else 'the CPU'}; precision={t.precision} jit_compile={t.jit_compile} "
        f"deterministic={t.deterministic} tf32={t.tf32}"
    )
    inputs, labels = bench.synthetic_batch(plan["batch"], plan["seq"], shape["vocab_size"], np.random.default_rng(0))
    embeddings = encoder.embedding_matrix(model)
    seconds = {}
    for name, trainer in bench.make_trainers(
        model, names, plan["batch"], t.precision, t.jit_compile, float(t.learning_rate)
    ).items():
        seconds[name] = check_method(
            report, name, trainer.train_step, trainer.optimizer, embeddings, inputs, labels, n_steps, bool(gpus)
        )
    check_pretrain_step(report, model_cfg, plan, n_steps)
    return {k: v for k, v in seconds.items() if v is not None}


def check_pretrain_step(report: Report, model_cfg, plan: dict, n_steps: int) -> None:
    """`make pretrain`'s train step on the same shape: the masked-LM model (random weights, its head
    on the gathered masked positions), AdamW, a batch masked as BERT masks; the loss must be finite."""
    from experiments.data import masking
    from experiments.model import encoder, mlm, rewrites
    from experiments.model.release import family
    from experiments.train import optim
    from experiments.train.pretraining import Pretrainer, as_inputs

    if family(model_cfg) not in mlm.MLM_FAMILIES:
        report.line(
            NOTE,
            "pretrain",
            f"model={model_cfg.name} ({family(model_cfg)}) has no masked-LM head: `make pretrain` refuses it",
        )
        return
    config = encoder.shape_config(model_cfg, plan.get("layers"))
    masked = mlm.build_mlm(OmegaConf.merge(model_cfg, {"checkpoint_dir": None}), config, seed=0)
    rewrites.prepare_model(masked.model)
    vocab, rng = config["vocab_size"], np.random.default_rng(0)
    ids = rng.integers(5, vocab, size=(plan["batch"], plan["seq"])).astype(np.int32)
    ids[:, 0], ids[:, -1] = 2, 3
    spec = masking.MaskSpec(mask_id=4, replacement_ids=np.arange(5, vocab, dtype=np.int32))
    batch = masking.mask_batch(ids, np.zeros_like(ids), [masking.token_groups(r, {0, 2, 3}) for r in ids], spec, rng)
    trainer = Pretrainer(masked.model, optim.make_adamw(1e-4, masked.model), spec, plan["batch"])
    try:
        losses, walls = [], []
        for _ in range(n_steps + 1):  # the first traces; untimed
            start = time.perf_counter()
            losses.append(float(trainer.train_step(*as_inputs(batch))["loss"]))
            walls.append(time.perf_counter() - start)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        report.line(FAIL, "pretrain", f"{type(err).__name__}: {first[:300]}", _fix_for(err))
        return
    detail = (
        f"{float(np.median(walls[1:])) if n_steps else float('nan'):.3f} s/step (masked LM, "
        f"{int(batch.weights.sum())} masked tokens, AdamW), loss {losses[-1]:.4f}"
    )
    if not all(math.isfinite(x) for x in losses):
        report.line(
            FAIL,
            "pretrain",
            f"non-finite loss {losses} on random weights; {detail}",
            "retry with a lower pretrain.learning_rate; if it persists, check the driver and CUDA set-up",
        )
        return
    report.line(OK, "pretrain", detail)


def check_method(report: Report, name, step, optimizer, embeddings, inputs, labels, n_steps, on_gpu) -> float | None:
    """One step at learning rate 0 (the weights, the embedding matrix above all, must come back
    exactly: Adam's update is then 0), then ``n_steps`` timed steps at the configured rate."""
    import tensorflow as tf

    inner = getattr(optimizer, "inner_optimizer", optimizer)  # mixed_float16's LossScaleOptimizer
    rate = float(inner.learning_rate.numpy())
    try:
        before = embeddings.numpy()
        inner.learning_rate = 0.0
        losses = [bench.timed(step, inputs, labels)[0]]  # traces; untimed
        changed = np.count_nonzero(embeddings.numpy() != before)
        inner.learning_rate = rate
        if on_gpu:
            tf.config.experimental.reset_memory_stats("GPU:0")
        walls = []
        for _ in range(n_steps):
            loss, wall, _ = bench.timed(step, inputs, labels)
            losses.append(loss)
            walls.append(wall)
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] if on_gpu else None
    except Exception as err:  # an out-of-memory, a missing ptxas, ...: the check fails, the others go on
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        report.line(FAIL, name, f"{type(err).__name__}: {first[:300]}", _fix_for(err))
        return None
    median = float(np.median(walls)) if walls else float("nan")
    detail = (
        f"{median:.3f} s/step, loss {losses[-1]:.4f}"
        + (f", peak GPU memory {peak / 2**30:.2f} GiB" if peak is not None else "")
        + (", embedding matrix restored exactly" if changed == 0 else "")
    )
    if not all(math.isfinite(x) for x in losses):
        report.line(
            FAIL,
            name,
            f"non-finite loss {losses} over {len(losses)} steps on random weights; {detail}",
            "retry with trainer.precision=float32 trainer.jit_compile=false (and a lower trainer.learning_rate "
            "if set); if that passes, train with those settings, else check the driver and CUDA set-up",
        )
        return None
    if changed:
        report.line(
            FAIL,
            name,
            f"{changed} entries of the embedding matrix differ after a step at learning rate 0: "
            "the perturbation was not undone exactly",
            "retry with trainer.jit_compile=false and trainer.deterministic=true; if it persists, "
            "report it with this output",
        )
        return None
    report.line(OK, name, detail)
    return median


def _fix_for(err: Exception) -> str:
    text = f"{type(err).__name__} {err}"
    if "ResourceExhausted" in text or "out of memory" in text.lower():
        return (
            "out of GPU memory: lower trainer.batch_size or task.max_length, or use "
            "trainer.precision=mixed_bfloat16 (Ampere and newer) or mixed_float16"
        )
    if "ptxas" in text or "libdevice" in text:
        return "XLA needs the CUDA compiler wheels: `make env GPU=1`, or set trainer.jit_compile=false"
    return (
        "retry with trainer.jit_compile=false and trainer.precision=float32; if it persists, report it with this output"
    )


# --- the sweep grid -----------------------------------------------------------------------------------


def estimate_grid(report: Report, cfg, gpus: list, args, step_seconds: dict[str, float]) -> None:
    """The grid's time: per run, its steps x a baseline step x the method's cost. On a GPU the
    steps timed above (BERT-base's shape at length 128); on a CPU the FLOP estimate of the
    device guard (the small model's steps say little about BERT-base's)."""
    seeds = [s for s in args.seeds.split(",") if s]
    report.section(f"the sweep grid: {args.tasks} x {args.methods} x {len(seeds)} seeds, model={cfg.model.name}")
    shape = estimate.model_shape(cfg.model)
    if gpus and "baseline" in step_seconds:  # FLOP/s of the baseline steps timed above, of this shape
        rate = estimate.train_flops(shape, GPU_STEPS["batch"], GPU_STEPS["seq"]) / step_seconds["baseline"]
        how = "from the GPU steps timed above"
    else:
        rate = estimate.cpu_flops_per_second()
        how = f"from FLOPs at this CPU's measured {rate / 1e9:.0f} GFLOP/s, as the device guard estimates"
    total, longest, missing = 0.0, 0.0, set()
    for task in args.tasks.split(","):
        for method in args.methods.split(","):
            run_cfg = config.compose([*args.overrides, f"task={task}", f"method={method}"])
            base = estimate.train_flops(shape, int(run_cfg.trainer.batch_size), int(run_cfg.task.max_length)) / rate
            measured = gpus and method in step_seconds and "baseline" in step_seconds
            cost = step_seconds[method] / step_seconds["baseline"] if measured else None
            run = estimate.run_seconds(run_cfg, base, cost)
            if run is None:
                missing.add(task)
                continue
            total += run[0] * len(seeds)
            longest = max(longest, run[0])
    if missing:
        report.line(NOTE, "grid", f"size of {', '.join(sorted(missing))} unknown (not downloaded): left out")
    where = (
        f"one GPU, one run after another (about {estimate.duration(total / len(gpus))} on the {len(gpus)} "
        "GPUs here with LAUNCHER=joblib)"
        if gpus
        else "this CPU"
    )
    report.line(
        OK,
        "grid",
        f"up to {estimate.duration(total)} on {where}; longest run {estimate.duration(longest)} "
        f"(batches padded to task.max_length; {how})",
    )


if __name__ == "__main__":
    sys.exit(main())
