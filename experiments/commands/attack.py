"""Accuracy under attack of a finished run, added to its record (docs/attack.md).

    python -m experiments.commands.attack RUN eval.attack.epsilons=[0.05,0.1,0.2] [eval.attack.steps=10 ...]

RUN is a run record (results/runs/*.json) or a run's Hydra folder. The run is rebuilt from its
record as ``make predict`` rebuilds it, with its best-dev weights (read, never written), and
attacked on the dev examples it was scored on: its own config's task, ``task.max_dev_samples``
and ``task.max_length``. The attack's settings are configs/eval/default.yaml, then the run's own
``eval`` (if it had one), then the ``eval.*`` overrides given here. The record is rewritten
atomically with ``robust_dev_acc`` and ``attack`` (after ``final_dev_acc``; an earlier attack's
are replaced); every other key keeps its value and place.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from omegaconf import OmegaConf

from experiments import CONFIG_DIR, config
from experiments.errors import UserError, reported
from experiments.commands.predict import find_record, load_run
from experiments import records

log = logging.getLogger("experiments.commands.attack")
FIELDS = ("robust_dev_acc", "attack")


def attack_config(record: dict, overrides: list[str]):
    """``eval.attack``: the defaults, the run's own ``eval``, then ``overrides`` (``eval.*`` keys only)."""
    for override in overrides:
        key = override.partition("=")[0]
        if not key.startswith("eval.attack.") or "=" not in override:
            raise UserError(f"{override!r}: only eval.attack.<key>=<value> can be set here (the run's own config "
                            "fixes its task, dev examples and max length), e.g. eval.attack.epsilons=[0.05,0.1]")
    cfg = OmegaConf.merge({"eval": OmegaConf.load(CONFIG_DIR / "eval" / "default.yaml")},
                          {"eval": record["config"].get("eval") or {}}, OmegaConf.from_dotlist(overrides))
    config.validate_attack(cfg)
    if not cfg.eval.attack.epsilons:
        raise UserError("no eps to attack with: say which, e.g. make attack RUN=... ARGS=\"eval.attack.epsilons=[0.05,0.1,0.2]\"")
    return cfg.eval.attack


def with_fields(record: dict, fields: dict) -> dict:
    """``record`` with ``fields`` right after ``final_dev_acc`` (where a run that attacked puts them), any
    earlier ones replaced; every other key keeps its value and its place."""
    out = {}
    for key, value in record.items():
        if key in fields:
            continue
        out[key] = value
        if key == "final_dev_acc":
            out.update(fields)
    return out if all(k in out for k in fields) else {**out, **fields}


def attack(run: str | Path, overrides: list[str]) -> dict:
    record_file, record = find_record(run)
    attack_cfg = attack_config(record, overrides)  # mistakes first, before TensorFlow's slow import
    from experiments.data import cache, loaders
    from experiments.train import embedding_attack

    cfg, _, tokenizer, trainer = load_run(record)
    _, _, dev_split = loaders.load_task(cfg.paths.clue_dir, cfg.task)  # task.max_dev_samples as the run had it
    dev, _ = cache.dataset(cfg, tokenizer, dev_split, cfg.task.dev_file)
    if len(dev) != record.get("dev_samples", len(dev)):
        raise UserError(f"{loaders.task_dir(cfg.paths.clue_dir, cfg.task) / cfg.task.dev_file}: {len(dev)} dev examples, "
                        f"but {record_file.name} was scored on {record['dev_samples']}; the data changed since the run")
    fields = embedding_attack.record_fields(trainer.model, tokenizer, dev, attack_cfg, "best", cfg.trainer.eval_batch_size,
                               cfg.trainer.pad_to_multiple_of, cfg.trainer.jit_compile, cfg.seed, cfg.trainer.progress)
    clean = fields["attack"]["clean_dev_acc"]
    if attack_cfg.max_samples is None and clean != record["best_dev_acc"]:
        log.warning("clean accuracy %.6f here, %.6f in the record (best_dev_acc): the weights or the data differ "
                    "from the run's", clean, record["best_dev_acc"])
    if any(k in record for k in FIELDS):
        print(f"{record_file.name}: the earlier attack's results are replaced")
    records.write_json_atomic(record_file, with_fields(record, fields))
    print(f"{record_file}: accuracy under attack ({fields['attack']['examples']} dev examples, clean "
          f"{clean:.4f}): " + ", ".join(f"eps {e}: {a:.4f}" for e, a in fields["robust_dev_acc"].items()))
    return fields


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.commands.attack", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run record (results/runs/*.json) or a run's Hydra folder")
    parser.add_argument("overrides", nargs="*", help="eval.attack.<key>=<value>, e.g. eval.attack.epsilons=[0.05,0.1]")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    with reported():
        attack(args.run, args.overrides)


if __name__ == "__main__":
    main()
