"""Comparing and starting runs: a history without its timings, and the `make sweep` command of two tiny runs."""

import sys

from experiments import PROJECT_ROOT
from tests.helpers.clue import tiny_overrides

TIMING_KEYS = {"seconds", "train_seconds", "eval_seconds", "samples_per_second", "input_wait_seconds"}


def numbers(history):
    return [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in history]


def sweep_command(clue, results, seeds: str = "0,1", extra=None, make=(), args_after=()) -> list[str]:
    """``make sweep`` over tiny runs of TNEWS's baseline (``seeds``, one epoch unless ``extra`` says), with
    this interpreter as PY; ``make``: more make variables (``LAUNCHER=slurm``), ``args_after``: more
    overrides after the tiny ones."""
    args = [
        o
        for o in tiny_overrides(clue, results, extra=extra or {"trainer.epochs": 1})
        if o.split("=")[0] not in ("task", "method", "model")
    ]
    # -o: take the environment as it is (the test runs inside it) instead of re-syncing it.
    return [
        "make",
        "-s",
        "-C",
        str(PROJECT_ROOT),
        "-o",
        ".venv/.synced",
        "sweep",
        "TASKS=tnews",
        "METHODS=baseline",
        f"SEEDS={seeds}",
        "MODEL=tiny",
        *make,
        f"PY={sys.executable}",
        f"ARGS={' '.join([*args, *args_after])}",
    ]
