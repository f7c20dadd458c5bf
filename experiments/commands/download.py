"""make data / make model: download and verify CLUE task data or a model checkpoint (or verify
what is there).

    python -m experiments.commands.download data [--tasks iflytek,tnews] [hydra overrides]
    python -m experiments.commands.download model [hydra overrides]
"""

from __future__ import annotations

import argparse
import logging
import sys

from experiments import CONFIG_DIR
from experiments.data import hub
from experiments.data.fetch import fetch_or_verify, model_target, task_target
from experiments.errors import UserError


def _compose(overrides: list[str]):
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from experiments import config

    try:
        return config.compose(overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(" ".join(f"invalid overrides: {err}".split())) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.commands.download",
                                     description="Download and verify CLUE task data or a model checkpoint.")
    parser.add_argument("what", choices=["data", "model"])
    parser.add_argument("--tasks", default="iflytek,tnews", help="comma-separated tasks for `data`")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for experiments.commands.run")
    args = parser.parse_intermixed_args(argv)  # options may come after overrides and vice versa
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.what == "model":
            cfg = _compose(args.overrides)
            if hub.uses_hub(cfg.model):  # the Hub snapshot (experiments/data/hub.py), fetched and verified
                folder = hub.snapshot(cfg.model, download=True)
                checked = hub.verify(cfg.model, folder)
                print(f"{folder}: {hub.hub_id(cfg.model)}@{hub.revision(cfg.model)}, {checked} LFS file(s) match "
                      "the Hub's sha256")
                return 0
            fetch_or_verify(model_target(cfg.model, cfg.download), cfg.download)
            return 0
        known_tasks = sorted(p.stem for p in (CONFIG_DIR / "task").glob("*.yaml"))
        tasks = [t for t in args.tasks.split(",") if t]
        for task in tasks:
            if task not in known_tasks:
                raise UserError(f"unknown task {task!r} in TASKS; choose from {', '.join(known_tasks)}")
        for task in tasks:
            cfg = _compose([*args.overrides, f"task={task}"])
            fetch_or_verify(task_target(cfg.paths.clue_dir, cfg.task, cfg.download), cfg.download)
    except UserError as err:
        # An expected failure: one line naming the URL or file and the fix, no traceback.
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
