"""CLUE's upload: for each task the best-dev run, its prediction files, all in one zip.

    python -m experiments.commands.submit RESULTS [--method baseline] [--model bert_base] [--runs A.json,B.json]
                                          [--out ZIP]

Without --runs, each task's run is the complete record under ``RESULTS/runs/`` of that
method and model with the highest best-dev accuracy (on a tie, the first by file name).
With --runs, the named records (or run folders), one per task. Each run's prediction files
(experiments/commands/predict.py, CLUE's names) are written to ``RESULTS/predictions/<run>/`` and
zipped, at the zip's top level as CLUE's upload expects, into
``RESULTS/submission/submit_<model>_<method>_<date>.zip`` unless --out says otherwise.
Prints what is in the zip and which of CLUE's classification files are missing, and why.
"""

from __future__ import annotations

import sys
import time
import zipfile
from pathlib import Path

from experiments import config, records
from experiments.commands import cli, predict
from experiments.errors import UserError

CLUE_TASKS = ("afqmc", "tnews", "iflytek", "cmnli", "ocnli", "cluewsc2020", "csl")  # CLUE's order


def tasks() -> list[str]:
    """The tasks of configs/task/, CLUE's first, in CLUE's order."""
    known = config.group_options("task")
    return [t for t in CLUE_TASKS if t in known] + [t for t in known if t not in CLUE_TASKS]


def prediction_files(task: str) -> list[str]:
    return list(config.load_group_option("task", task).predict_files.values())


def choose(results_dir: Path, method: str, model: str, runs: list[str] | None) -> dict[str, tuple[Path, dict]]:
    """task -> (record file, record) of the run to submit."""
    chosen: dict[str, tuple[Path, dict]] = {}
    if runs:
        for run in runs:
            path, record = predict.find_record(run)
            if record["task"] in chosen:
                raise UserError(
                    f"{path}: a second {record['task']} run (the first: {chosen[record['task']][0]}); "
                    "name one run per task in RUNS"
                )
            chosen[record["task"]] = (path, record)
        return chosen
    for path in sorted((results_dir / "runs").glob("*.json")):
        record = records.read_record(path)
        if record is None or record["method"] != method or record["model"] != model:
            continue
        best = chosen.get(record["task"])
        if best is None or record["best_dev_acc"] > best[1]["best_dev_acc"]:
            chosen[record["task"]] = (path, record)
    if not chosen:
        raise UserError(
            f"no complete run of method={method}, model={model} in {results_dir / 'runs'}; "
            "set METHOD= and MODEL= to runs you have, or name them with RUNS="
        )
    return chosen


def submit(
    results_dir: str | Path,
    method: str = "baseline",
    model: str = "bert_base",
    runs: list[str] | None = None,
    out: str | Path | None = None,
) -> Path:
    results_dir = Path(results_dir)
    chosen = choose(results_dir, method, model, runs)
    label = "runs" if runs else f"{model}_{method}"
    out = Path(out) if out else results_dir / "submission" / f"submit_{label}_{time.strftime('%Y%m%d')}.zip"
    inside, missing = [], []
    for task in tasks():
        if task not in chosen:
            why = "not named in RUNS" if runs else f"no complete {task} run of method={method}, model={model}"
            missing += [(name, why) for name in prediction_files(task)]
            continue
        path, record = chosen[task]
        written = predict.predict(path, out=results_dir / "predictions" / path.stem)
        inside += [(p, path, record) for p in written]
        missing += [
            (name, "its test file is not in the task folder")
            for name in prediction_files(task)
            if name not in {p.name for p in written}
        ]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for p, _, _ in inside:
            archive.write(p, arcname=p.name)
    tmp.replace(out)
    print(f"{out}: {len(inside)} prediction file{'s' * (len(inside) != 1)}")
    for p, path, record in inside:
        lines = sum(1 for _ in p.open(encoding="utf-8"))
        print(
            f"  in:      {p.name:<24} {lines:>6} lines  {path.name} (best dev {100 * record['best_dev_acc']:.2f}, "
            f"epoch {record['best_epoch']})"
        )
    for name, why in missing:
        print(f"  missing: {name:<24} {why}")
    return out


def main(argv=None) -> int:
    p = cli.parser("experiments.commands.submit", __doc__)
    p.add_argument("results_dir", help="the folder holding runs/ (paths.results_dir)")
    p.add_argument("--method", default="baseline", help="pick each task's best-dev run of this method")
    p.add_argument("--model", default="bert_base", help="... and of this model")
    p.add_argument(
        "--runs",
        default=None,
        help="instead: these run records or run folders, one per task (comma- or space-separated)",
    )
    p.add_argument("--out", default=None, help="the zip (default: RESULTS/submission/submit_<...>_<date>.zip)")
    return cli.main(
        p,
        lambda args: submit(
            args.results_dir,
            args.method,
            args.model,
            args.runs.replace(",", " ").split() if args.runs else None,
            args.out,
        ),
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
