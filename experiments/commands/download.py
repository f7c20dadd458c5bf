"""make data / make model: download and verify CLUE task data or a model checkpoint (or verify
what is there).

    python -m experiments.commands.download data [--tasks iflytek,tnews] [hydra overrides]
    python -m experiments.commands.download model [hydra overrides]
"""

from __future__ import annotations

import logging
import sys

from experiments import config
from experiments.commands import cli
from experiments.data import hub
from experiments.data.fetch import fetch_or_verify, model_target, task_target
from experiments.errors import UserError


def download(what: str, tasks: str, overrides: list[str]) -> None:
    """Fetch (or verify) the checkpoint of the composed ``model``, or the data of each of ``tasks``."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if what == "model":
        cfg = cli.compose(overrides)
        if hub.uses_hub(cfg.model):  # the Hub snapshot (experiments/data/hub.py), fetched and verified
            folder = hub.snapshot(cfg.model, download=True)
            checked = hub.verify(cfg.model, folder)
            print(
                f"{folder}: {hub.hub_id(cfg.model)}@{hub.revision(cfg.model)}, {checked} LFS file(s) match "
                "the Hub's sha256"
            )
            return
        fetch_or_verify(model_target(cfg.model, cfg.download), cfg.download)
        return
    known_tasks = config.group_options("task")
    names = [t for t in tasks.split(",") if t]
    for task in names:
        if task not in known_tasks:
            raise UserError(f"unknown task {task!r} in TASKS; choose from {', '.join(known_tasks)}")
    for task in names:
        cfg = cli.compose([*overrides, f"task={task}"])
        fetch_or_verify(task_target(cfg.paths.clue_dir, cfg.task, cfg.download), cfg.download)


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(
        "experiments.commands.download", "Download and verify CLUE task data or a model checkpoint.", cli.OVERRIDES_HELP
    )
    p.add_argument("what", choices=["data", "model"])
    p.add_argument("--tasks", default="iflytek,tnews", help="comma-separated tasks for `data`")
    return cli.main(p, lambda args: download(args.what, args.tasks, args.overrides), argv)


if __name__ == "__main__":
    sys.exit(main())
