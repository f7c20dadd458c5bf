"""CLUE test-set predictions from a finished run's best-dev weights.

    python -m experiments.commands.predict RUN [--task TASK] [--out DIR]

RUN is a run record (results/runs/*.json) or a run's Hydra folder (results/logs/...).
Writes the task's submission files (configs/task/*.yaml: predict_files, CLUE's names), one
``{"id": ..., "label": "<label as in the data>"}`` per line in test-file order, into
``<results_dir>/predictions/<run>/`` unless --out says otherwise. A test file other than
the task's first one (TNEWS's and CLUEWSC's 1.0 test sets) is skipped where it is absent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from experiments import config as _config  # noqa: F401  (registers the project_root resolver)
from experiments import records
from experiments.commands import cli
from experiments.errors import UserError

USAGE = "make predict RUN=results/runs/<record>.json"


def find_record(run: str | Path | None, usage: str = USAGE) -> tuple[Path, dict]:
    """The complete record named by ``run``: its file, or the Hydra folder of the run."""
    if not run or ("=" in str(run) and not Path(run).exists()):  # none given (make's RUN=), or an override
        raise UserError(f"say which run: {usage}")
    run = Path(run)
    if run.is_dir():
        saved = run / ".hydra" / "config.yaml"
        if not saved.is_file():
            raise UserError(f"{run}: neither a run record (.json) nor a run folder with .hydra/config.yaml")
        cfg = records.with_pretraining(OmegaConf.to_container(OmegaConf.load(saved), resolve=True))
        run = records.record_path(cfg["paths"]["results_dir"], cfg)  # as run() named it (model.pretrained)
    record = records.read_record(run, records.DONE)
    if record is None:
        raise UserError(f"{run}: no complete run record there; the run did not finish (see `make sweep` to resume)")
    if record["status"] == records.DIVERGED:
        at = record["diverged_at"]
        raise UserError(
            f"{run}: this run diverged (a non-finite loss at epoch {at['epoch']}, step {at['step']}); "
            "predict with a complete run, or delete this record and rerun with other settings"
        )
    return run, record


def load_run(record: dict):
    """Rebuild a run's tokenizer and model with its best-dev weights."""
    from experiments.data import hub, loaders
    from experiments.model import head
    from experiments.train import loop, optim

    cfg = OmegaConf.create(record["config"])
    weights = record.get("best_weights")
    if not weights or not Path(weights).is_file():
        raise UserError(
            f"{weights}: best-dev weights not found; the run was made with trainer.save_best=false "
            "or its checkpoints folder was removed: rerun it"
        )
    label_ids, train, _ = loaders.load_task(cfg.paths.clue_dir, cfg.task)  # train texts: the tiny model's vocab
    hub.resolve(cfg.model)  # a model from the Hub: its cached snapshot
    optim.set_precision(cfg.trainer.precision)
    tokenizer, model = head.load_classifier(cfg.model, train.all_texts(), len(label_ids), cfg.task.max_length, cfg.seed)
    model.load_weights(weights)
    trainer = loop.Trainer(model, None, None, cfg.trainer.batch_size, eval_batch_size=cfg.trainer.eval_batch_size)
    return cfg, label_ids, tokenizer, trainer


def predict(run: str | Path, task: str | None = None, out: str | Path | None = None) -> list[Path]:
    from experiments.data import batching, loaders

    record_file, record = find_record(run)
    if task is not None and task != record["task"]:
        raise UserError(f"{record_file}: a {record['task']} run, not {task}; pick a {task} run or drop TASK=")
    cfg, label_ids, tokenizer, trainer = load_run(record)
    out = Path(out) if out else Path(cfg.paths.results_dir) / "predictions" / record_file.stem
    folder = loaders.task_dir(cfg.paths.clue_dir, cfg.task)
    written = []
    for k, (test_name, predict_name) in enumerate(cfg.task.predict_files.items()):
        if k > 0 and not (folder / test_name).is_file():
            print(f"{folder / test_name}: not there, so no {predict_name}")
            continue
        split = loaders.read_split(folder / test_name, label_ids, labelled=False, fmt=loaders.task_format(cfg.task))
        classes = trainer.predict(*batching.encode(tokenizer, split.texts, cfg.task.max_length, texts_b=split.texts_b))
        lines = [json.dumps({"id": i, "label": label_ids[c]}, ensure_ascii=False) for i, c in zip(split.ids, classes)]
        path = out / predict_name
        records.write_text_atomic(path, "\n".join(lines) + "\n")
        written.append(path)
        print(f"{path}: {len(lines)} predictions from {record_file.name} (best dev epoch {record['best_epoch']})")
    return written


def main(argv=None) -> int:
    p = cli.parser("experiments.commands.predict", __doc__)
    p.add_argument("run", nargs="?", help="a run record (results/runs/*.json) or a run's Hydra folder")
    p.add_argument("--task", default=None, help="check that the run is of this task")
    p.add_argument("--out", default=None, help="output folder (default: results/predictions/<run>/)")
    return cli.main(p, lambda args: predict(args.run, args.task, args.out), argv)


if __name__ == "__main__":
    sys.exit(main())
