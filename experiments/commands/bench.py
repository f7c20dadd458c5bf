"""`make bench`: seconds per warmed-up train step of every method, and their ratios to the baseline's.

    python -m experiments.commands.bench [--layers 0 --rounds 3 --steps 2] [model=albert_tiny_zh]
                                         [trainer.precision=mixed_float16] [trainer.jit_compile=true]

The model has the shape of the composed ``model`` (default bert_base: vocab 21128, hidden 768; its
config's ``shape``, first ``--layers`` layers), seq 128, batch 32, random weights and tokens (no
checkpoint needed), under ``trainer.precision`` and ``trainer.jit_compile`` (checked as a run checks
them), in one process. Also timed: accuracy under attack of one eps (configs/eval/default.yaml, K=10)
against a clean evaluation of the same texts, per dev example (``attack_over_clean_eval``). The
output names the CPU and its widest vector extension (``/proc/cpuinfo``'s flags, as lscpu shows them).

Methods are timed in interleaved rounds (each round runs every method for ``--steps``
steps), so a load spike from another process hits all of them alike; the figure kept
per method is the median step. CPU seconds of this process are kept too: unlike wall
time they barely move when other processes share the cores, and the share of the
machine those used meanwhile is recorded (``machine.others_cpu_share``). Writes
``results/bench/latest.json`` and prints a table.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from experiments import PROJECT_ROOT, config, records
from experiments.commands import cli
from experiments.errors import UserError

# name -> (config file under configs/method/, overrides of its keys)
METHODS = {
    "baseline": ("baseline", {}),
    "fgm": ("fgm", {}),
    "fgm_dropout": ("fgm", {"attack_dropout": True}),  # attack pass in training mode (PyTorch recipe)
    "fgm_clean": ("fgm", {"accumulate_clean": True}),
    "gp": ("gp", {}),
    "pgd": ("pgd", {}),
    "freelb": ("freelb", {}),
}

# issue 5's targets on a 2-core CPU, in baseline steps (the floors: FGM 5/3, GP 2 in matmul work)
TARGETS = {"fgm": 1.8, "gp": 2.0}


def arguments():
    p = cli.parser(
        "experiments.commands.bench",
        __doc__,
        "Hydra overrides: model= (its shape), trainer.precision=, trainer.jit_compile=",
    )
    p.add_argument(
        "--layers", type=int, default=2, help="transformer layers (BERT-base has 12); 0: the model's own count"
    )
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)}")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds (the first one traces)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2, help="timed steps per method per round")
    p.add_argument(
        "--attack-texts",
        type=int,
        default=256,
        help="synthetic dev texts for the accuracy-under-attack timing (one eps, eval.attack defaults)",
    )
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / "results" / "bench" / "latest.json")
    return p


def build_model(model_cfg, layers: int | None = None, precision: str = "float32"):
    """The classifier of ``model_cfg``'s family and shape (its first ``layers`` layers), random
    weights, under ``precision`` and prepared as a run prepares its model; and its encoder config."""
    from experiments.model import encoder, head, rewrites
    from experiments.train import optim

    optim.set_precision(precision)
    shape = encoder.shape_config(model_cfg, layers)
    model = head.build_classifier(model_cfg, shape, 15, seed=0, load_weights=False)
    rewrites.prepare_model(model, precision)
    return model, shape


def synthetic_batch(batch: int, seq: int, vocab: int, rng: np.random.Generator):
    """Random tokens between [CLS] and [SEP], no padding (the full seq-long batch), random labels."""
    import tensorflow as tf

    ids = rng.integers(5, vocab, size=(batch, seq)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 2, 3
    return (tf.constant(ids), tf.zeros_like(ids)), tf.constant(rng.integers(0, 15, size=batch).astype(np.int32))


def make_trainers(model, names, batch: int, precision: str, jit_compile: bool, learning_rate: float = 2e-5) -> dict:
    """name -> Trainer of each method, each with its own Adam, as a run builds them."""
    from experiments.train import loop, optim

    trainers = {}
    for name in names:
        optimizer = optim.make_optimizer(learning_rate, precision, jit_compile)
        trainers[name] = loop.Trainer(
            model, make_method(name, model, optimizer), optimizer, batch, jit_compile=jit_compile, progress=False
        )
    return trainers


def timed(step, inputs, labels) -> tuple[float, float, float]:
    """(loss, wall seconds, CPU seconds of this process) of one call of a train step;
    float() waits for the step to finish."""
    start, start_cpu = time.perf_counter(), time.process_time()
    loss = float(step(inputs, labels)["loss"])
    return loss, time.perf_counter() - start, time.process_time() - start_cpu


def make_method(name, model, optimizer):
    from experiments.train import methods

    file, overrides = METHODS[name]
    # Overrides first, then interpolations (fgm's attack_dropout follows accumulate_clean).
    cfg = config.compose([f"method={file}", *(f"method.{k}={v}" for k, v in overrides.items())])
    return methods.build(OmegaConf.to_container(cfg.method, resolve=True), model, optimizer)


def tnews_like(rng, n: int, seq: int, vocab: int = 21128) -> list[np.ndarray]:
    """``n`` random token-id sequences of TNEWS-like lengths (normal, mean 24 tokens, sd 8:
    TNEWS train has mean 23.4 and per-batch padding efficiency 0.63 at batch 32: README, Speed)."""
    lengths = np.clip(np.rint(rng.normal(24, 8, n)), 3, seq).astype(int)
    return [rng.integers(5, vocab, size=k).astype(np.int32) for k in lengths]


def time_attack(trainer, defaults, rng, n: int, seq: int, vocab: int) -> dict:
    """Accuracy under attack of ``n`` TNEWS-like texts at one eps with ``eval.attack``'s settings
    (``defaults``; configs/eval/default.yaml's K=10 steps: K forward/backward passes and one forward pass
    per example) against the clean evaluation of the same texts (``Trainer.predict``), each timed after an
    untimed pass."""
    from experiments.data import batching
    from experiments.train.embedding_attack import Attack

    dev = batching.Dataset(tnews_like(rng, n, seq, vocab), rng.integers(0, 15, n).astype(np.int32))
    attack = Attack(
        trainer.model,
        (2, 3),
        steps=defaults.steps,
        step_size_ratio=defaults.step_size_ratio,
        random_start=defaults.random_start,
        perturb_special_tokens=defaults.perturb_special_tokens,
        batch_size=trainer.eval_batch_size,
        progress=False,
    )
    seconds, cpu = {}, {}
    works = (("clean", lambda: trainer.predict(dev.token_ids)), ("attack", lambda: attack.evaluate(dev, [0.1])))
    for name, work in works:
        work()
        start, start_cpu = time.perf_counter(), time.process_time()
        work()
        seconds[name], cpu[name] = time.perf_counter() - start, time.process_time() - start_cpu
    return {
        "texts": n,
        "steps": int(defaults.steps),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "seconds_per_example": {k: v / n for k, v in seconds.items()},
        "attack_over_clean_eval": seconds["attack"] / seconds["clean"],
        "cpu_ratio": cpu["attack"] / cpu["clean"],
    }


def attack_share_of_run(ratio: float, task: str = "iflytek", epochs: int = 50, batch: int = 32) -> dict:
    """An estimate: what one eps of the default attack adds to a baseline run of ``task`` (the official
    train/dev sizes of experiments.machine.estimate; a dev evaluation costs a third of a train step per
    batch of examples, as ``estimate.run_seconds`` counts it), in baseline train steps and as a share."""
    from experiments.machine import estimate

    dev = estimate.DEV_EXAMPLES[task]
    eval_steps = dev / batch / 3  # one clean dev evaluation, in train steps
    run_steps = epochs * (-(-estimate.TRAIN_EXAMPLES[task] // batch) + eval_steps)
    return {
        "task": task,
        "epochs": epochs,
        "dev_examples": dev,
        "attack_steps": ratio * eval_steps,
        "run_steps": run_steps,
        "share_of_baseline_run": ratio * eval_steps / run_steps,
    }


def busy_jiffies() -> int | None:
    """CPU time all processes have used so far (Linux /proc/stat, in clock ticks)."""
    try:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, open("/proc/stat").readline().split()[1:9])
    except (OSError, ValueError):
        return None
    return user + nice + system + irq + softirq + steal


def machine() -> dict:
    import tensorflow as tf

    from experiments.machine import environment

    return {
        "device": environment.device_name(),
        "cpu": environment.cpu_model(),
        "vector_extensions": environment.vector_extensions(),
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "host": platform.node(),
    }


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(arguments(), lambda args: bench(args, argv), argv)


def bench(args, argv: list[str]) -> dict:
    """Time the steps, write ``args.out`` and print the table; return what was written."""
    names = [m for m in args.methods.split(",") if m]
    unknown = [m for m in names if m not in METHODS]
    if unknown or "baseline" not in names:
        raise UserError(f"--methods must include baseline and name only {', '.join(METHODS)}; got {args.methods}")
    cfg = cli.compose(args.overrides)  # model=, trainer.precision= (one of config.PRECISIONS), trainer.jit_compile=
    precision, jit_compile = cfg.trainer.precision, bool(cfg.trainer.jit_compile)
    load_before = os.getloadavg()

    import tensorflow as tf

    from experiments.machine import environment
    from experiments.model import encoder, release

    tf.get_logger().setLevel("ERROR")  # one retracing warning per method otherwise
    environment.seed_everything(0)  # as a run does (op determinism included)
    model_cfg = cfg.model
    model, shape = build_model(model_cfg, args.layers, precision)
    rng = np.random.default_rng(0)
    vocab = shape["vocab_size"]
    inputs, labels = synthetic_batch(args.batch, args.seq, vocab, rng)
    trainers = make_trainers(model, names, args.batch, precision, jit_compile)
    steps = {name: trainer.train_step for name, trainer in trainers.items()}
    # Warm-up in the timed order too: a method's first step after all the others have run
    # (and allocated their buffers) is slow once, and would otherwise be a timed one.
    for r in range(args.warmup):
        for name in names:
            float(steps[name](inputs, labels)["loss"])
        print(f"warm-up round {r + 1}/{args.warmup} done", file=sys.stderr, flush=True)
    times, cpu = {name: [] for name in names}, {name: [] for name in names}
    wall0, cpu0, busy0 = time.perf_counter(), time.process_time(), busy_jiffies()
    for r in range(args.rounds):
        for name in names:
            for _ in range(args.steps):
                _, wall, cpu_seconds = timed(steps[name], inputs, labels)
                times[name].append(wall)
                cpu[name].append(cpu_seconds)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    others = None
    if busy0 is not None:  # the machine's CPU time minus ours, over what the cores could give
        others_seconds = (busy_jiffies() - busy0) / os.sysconf("SC_CLK_TCK") - (time.process_time() - cpu0)
        others = max(0.0, others_seconds / ((time.perf_counter() - wall0) * os.cpu_count()))

    per_step = {name: statistics.median(t) for name, t in times.items()}
    cpu_per_step = {name: statistics.median(t) for name, t in cpu.items()}
    base = per_step["baseline"]
    print("timing accuracy under attack", file=sys.stderr, flush=True)
    attack = time_attack(trainers["baseline"], cfg.eval.attack, rng, args.attack_texts, args.seq, vocab)
    result = {
        "command": " ".join(["python -m experiments.commands.bench", *argv]),
        "model": {
            "name": model_cfg.name,
            "family": release.family(model_cfg),
            "parameters": model.count_params(),
            "layers_of": encoder.shape_config(model_cfg)["num_hidden_layers"],
        },
        "shape": {
            "vocab": vocab,
            "hidden": shape["hidden_size"],
            "layers": shape["num_hidden_layers"],
            "heads": shape["num_attention_heads"],
            "intermediate": shape["intermediate_size"],
            "embedding": shape.get("embedding_size", shape["hidden_size"]),
            "seq": args.seq,
            "batch": args.batch,
        },
        "precision": precision,
        "jit_compile": jit_compile,
        "steps": {name: len(t) for name, t in times.items()},
        "seconds_per_step": per_step,
        "seconds_per_step_all": times,
        "spread": {name: [min(t), max(t)] for name, t in times.items()},
        **{f"{name}_over_baseline": per_step[name] / base for name in names if name != "baseline"},
        "cpu_seconds_per_step": cpu_per_step,
        "cpu_over_baseline": {name: t / cpu_per_step["baseline"] for name, t in cpu_per_step.items()},
        "attack": {**attack, "iflytek_estimate": attack_share_of_run(attack["attack_over_clean_eval"])},
        "attack_over_clean_eval": attack["attack_over_clean_eval"],
        "machine": {
            **machine(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "others_cpu_share": others,
        },
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    records.write_json_atomic(args.out, result)
    print(table(result))
    print(f"written: {args.out}")
    return result


def table(result: dict) -> str:
    shape, m = result["shape"], result["machine"]
    others = m["others_cpu_share"]
    model = result.get("model", {"name": "bert_base", "family": "bert", "layers_of": 12})
    embedding = (
        f", embeddings {shape['embedding']}" if shape.get("embedding", shape["hidden"]) != shape["hidden"] else ""
    )
    lines = [
        f"{model['name']} ({model['family']}): {shape['layers']} of {model['layers_of']} layers x hidden "
        f"{shape['hidden']}{embedding}, vocab {shape['vocab']}, "
        f"batch {shape['batch']} x seq {shape['seq']}, {result['precision']}"
        f"{', XLA' if result['jit_compile'] else ''}; {m['device']} {m['cpu']} "
        f"({m.get('vector_extensions', '?')}), {m['cpu_count']} cores, "
        f"TF {m['tensorflow']}; other processes used "
        f"{'?' if others is None else f'{100 * others:.0f}%'} of the CPUs meanwhile",
        "| method | steps | s/step (median) | min..max | x baseline | CPU s/step | CPU x baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, sec in result["seconds_per_step"].items():
        lo, hi = result["spread"][name]
        ratio = 1.0 if name == "baseline" else result[f"{name}_over_baseline"]
        lines.append(
            f"| {name} | {result['steps'][name]} | {sec:.3f} | {lo:.3f}..{hi:.3f} | {ratio:.2f} | "
            f"{result['cpu_seconds_per_step'][name]:.3f} | {result['cpu_over_baseline'][name]:.2f} |"
        )
    if "attack" in result:
        a, share = result["attack"], result["attack"]["iflytek_estimate"]
        lines.append(
            f"accuracy under attack ({a['texts']} TNEWS-like texts, one eps, K={a['steps']}): "
            f"{1e3 * a['seconds_per_example']['attack']:.1f} ms per dev example against "
            f"{1e3 * a['seconds_per_example']['clean']:.2f} ms clean = "
            f"{a['attack_over_clean_eval']:.1f}x a clean "
            f"evaluation ({a['cpu_ratio']:.1f}x the CPU time); estimate: one eps on IFLYTEK's "
            f"{share['dev_examples']} dev examples adds {100 * share['share_of_baseline_run']:.1f}% to a "
            f"{share['epochs']}-epoch baseline run"
        )
    for name, target in TARGETS.items():
        if f"{name}_over_baseline" in result:
            ratio = result[f"{name}_over_baseline"]
            met = "met" if ratio <= target else "NOT met"
            lines.append(f"target {name} <= {target}x baseline: {ratio:.2f}x, {met}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
