"""Comparing and starting runs: a history without its timings, and the `make sweep` command of two tiny runs."""

import sys

from experiments import PROJECT_ROOT
from tests.helpers.clue import tiny_overrides

TIMING_KEYS = {"seconds", "train_seconds", "eval_seconds", "samples_per_second", "input_wait_seconds"}


def numbers(history):
    return [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in history]


def sweep_command(clue, results) -> list[str]:
    """``make sweep`` over two tiny one-epoch runs (seeds 0 and 1), with this interpreter as PY."""
    args = [
        o
        for o in tiny_overrides(clue, results, extra={"trainer.epochs": 1})
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
        "SEEDS=0,1",
        "MODEL=tiny",
        f"PY={sys.executable}",
        f"ARGS={' '.join(args)}",
    ]
