"""Accuracy under attack of a finished run, added to its record (docs/attack.md).

    python -m experiments.commands.attack RUN eval.attack.epsilons=[0.05,0.1,0.2] [eval.attack.steps=10 ...]
    python -m experiments.commands.attack RUN eval.text_attack.enabled=true [eval.text_attack.budget=0.1 ...]
    python -m experiments.commands.attack RUN eval.text_attack.from=OTHER_RECORD [paths.clue_dir=... ...]

RUN is a run record (results/runs/*.json) or a run's Hydra folder. The run is rebuilt from its
record as ``make predict`` rebuilds it, with its best-dev weights (read, never written), and
attacked on the dev examples it was scored on: its own config's task, ``task.max_dev_samples``
and ``task.max_length``. The attack's settings are configs/eval/default.yaml, then the run's own
``eval`` (if it had one), then the ``eval.*`` overrides given here. The text attack
(``eval.text_attack.enabled=true``) and transfer scoring (``eval.text_attack.from=<record>``: this run on
the adversarial texts made against that one) run when given here; PGD on the embeddings then only with
``eval.attack.epsilons=...`` given too, and otherwise as the run's own config or the command line says.
``paths.*`` say where the data, models and checkpoints are on this machine (they change no result).
The record is rewritten atomically with ``robust_dev_acc`` and ``attack``, ``text_attack`` (its
adversarial examples in ``<record>.text_attack.jsonl`` beside it) or ``text_attack_transfer`` (after
``final_dev_acc``; an earlier attack's are replaced); every other key keeps its value and place.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf

from experiments import config, records
from experiments.commands import cli
from experiments.commands.predict import find_record, load_run
from experiments.errors import UserError

log = logging.getLogger("experiments.commands.attack")


def attack_config(record: dict, overrides: list[str]):
    """``eval``: the defaults, the run's own ``eval``, then ``overrides`` (``eval.*`` keys; ``paths.*`` are
    taken by ``with_paths``)."""
    for override in overrides:
        key = override.partition("=")[0]
        if not key.startswith(("eval.attack.", "eval.text_attack.", "paths.")) or "=" not in override:
            raise UserError(
                f"{override!r}: only eval.attack.<key>=<value> can be set here, eval.text_attack.<key>="
                "<value> and paths.<key>=<dir> (the run's own config fixes its task, dev examples and max "
                "length), e.g. eval.attack.epsilons=[0.05,0.1] or eval.text_attack.enabled=true"
            )
    evals = [o for o in overrides if o.startswith("eval.")]
    cfg = OmegaConf.merge(
        {"eval": config.load_group_option("eval", "default")},
        {"eval": record["config"].get("eval") or {}},
        OmegaConf.from_dotlist(evals),
    )
    config.validate_attack(cfg)
    config.validate_text_attack(cfg)
    text = cfg.eval.text_attack
    # What runs is what this command line asks for, not what the run's own config did after training.
    asked = OmegaConf.from_dotlist(evals)
    text.enabled = bool(OmegaConf.select(asked, "eval.text_attack.enabled", default=False))
    text["from"] = OmegaConf.select(asked, "eval.text_attack.from", default=None)
    if (text.enabled or text["from"]) and not any(o.startswith("eval.attack.epsilons=") for o in evals):
        cfg.eval.attack.epsilons = []  # the text attack or transfer was asked for: the run's own eps are not redone
    if not cfg.eval.attack.epsilons and not text.enabled and not text.get("from"):
        raise UserError(
            "no eps to attack with, nor a text attack: say which, e.g. make attack RUN=... "
            'ARGS="eval.attack.epsilons=[0.05,0.1,0.2]" '
            'or ARGS="eval.text_attack.enabled=true"'
        )
    return cfg.eval


def with_paths(record_file: Path, record: dict, overrides: list[str]) -> dict:
    """``record`` as this machine finds it: each ``paths.<key>=<dir>`` override replaces that folder, also
    where the recorded config and best weights start with it (model.checkpoint_dir under paths.models_dir,
    the weights under paths.results_dir). Without paths.results_dir, weights the record names but this
    machine lacks are looked for beside the record (<results>/checkpoints/<run>/). Where things are on disk
    changes no result: the record keeps its own config."""
    cfg = json.loads(json.dumps(record["config"]))
    weights = record.get("best_weights")
    moves = sorted(
        ((o.partition("=")[0][len("paths.") :], o.partition("=")[2]) for o in overrides if o.startswith("paths.")),
        key=lambda kv: -len(str(cfg["paths"].get(kv[0]) or "")),
    )

    def moved(value, old, new):
        if isinstance(value, str) and old and (value == old or value.startswith(old.rstrip("/") + "/")):
            return new + value[len(old) :]
        return value

    for key, new in moves:
        old = cfg["paths"].get(key)
        cfg["paths"][key] = new
        if isinstance(old, str):
            cfg["model"] = {k: moved(v, old, new) for k, v in cfg["model"].items()}
            weights = moved(weights, old, new) if key == "results_dir" else weights
    if weights and not Path(weights).is_file() and "results_dir" not in dict(moves):
        beside = record_file.parent.parent / "checkpoints" / record_file.stem / Path(weights).name
        weights = str(beside) if beside.is_file() else weights
    return {**record, "config": cfg, "best_weights": weights}


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
    usage = 'make attack RUN=results/runs/<record>.json ARGS="eval.attack.epsilons=[0.05,0.1,0.2]"'
    record_file, record = find_record(run, usage)
    eval_cfg = attack_config(record, overrides)  # mistakes first, before TensorFlow's slow import
    attack_cfg = eval_cfg.attack
    from experiments.data import cache, loaders
    from experiments.train import embedding_attack, text_attack

    cfg, label_ids, tokenizer, trainer = load_run(with_paths(record_file, record, overrides))
    _, _, dev_split = loaders.load_task(cfg.paths.clue_dir, cfg.task)  # task.max_dev_samples as the run had it
    dev, _ = cache.dataset(tokenizer, dev_split, cfg.task.dev_file, cfg.task, cfg.paths, cfg.trainer.progress)
    if len(dev) != record.get("dev_samples", len(dev)):
        dev_file = loaders.task_dir(cfg.paths.clue_dir, cfg.task) / cfg.task.dev_file
        raise UserError(
            f"{dev_file}: {len(dev)} dev examples, "
            f"but {record_file.name} was scored on {record['dev_samples']}; the data changed since the run"
        )
    fields = {}
    if attack_cfg.epsilons:
        t = cfg.trainer
        fields = embedding_attack.record_fields(
            trainer.model,
            tokenizer,
            dev,
            attack_cfg,
            "best",
            batch_size=t.eval_batch_size,
            pad_to_multiple_of=t.pad_to_multiple_of,
            jit_compile=t.jit_compile,
            seed=cfg.seed,
            progress=t.progress,
        )
        clean = fields["attack"]["clean_dev_acc"]
        if attack_cfg.max_samples is None and clean != record["best_dev_acc"]:
            log.warning(
                "clean accuracy %.6f here, %.6f in the record (best_dev_acc): the weights or the data differ "
                "from the run's",
                clean,
                record["best_dev_acc"],
            )
        print(
            f"{record_file}: accuracy under attack ({fields['attack']['examples']} dev examples, clean "
            f"{clean:.4f}): " + ", ".join(f"eps {e}: {a:.4f}" for e, a in fields["robust_dev_acc"].items())
        )
    text = text_attack.run_fields(
        cfg,
        eval_cfg.text_attack,
        trainer.model,
        tokenizer,
        label_ids,
        dev_split,
        "best",
        record_file,
        record.get(text_attack.TRANSFER),
    )
    for key, value in text.items():
        print(f"{record_file}: {text_attack.describe(key, value)}")
    fields.update(text)
    if any(k in record for k in fields):
        print(f"{record_file.name}: the earlier results of {', '.join(k for k in fields if k in record)} are replaced")
    records.write_json_atomic(record_file, with_fields(record, fields))
    return fields


def main(argv=None) -> int:
    p = cli.parser(
        "experiments.commands.attack",
        __doc__,
        "eval.attack.<key>=<value>, e.g. eval.attack.epsilons=[0.05,0.1]; eval.text_attack.<key>=<value>, "
        "e.g. eval.text_attack.enabled=true; paths.<key>=<dir> (onto the run's own config)",
    )
    p.add_argument("run", nargs="?", help="a run record (results/runs/*.json) or a run's Hydra folder")
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    return cli.main(p, lambda args: attack(args.run, args.overrides), argv)


if __name__ == "__main__":
    sys.exit(main())
