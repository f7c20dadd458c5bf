"""make evidence: the TNEWS self-pretrained study (docs/evidence/tnews-self-pretrained/PLAN.md) from
scratch or where it stopped, then its tables; and the re-make of its main grid, compared to the record.

    python -m experiments.commands.evidence study [overrides]     # make evidence ARGS="paths.clue_dir=..."
    python -m experiments.commands.evidence remake [--out DIR] [overrides]
    python -m experiments.commands.evidence compare FOLDER [--against DIR] [--out FILE]

study: pretrain the model (if its folder has no pretrain_record.json), count the committed records as
done (copied into results/evidence/ where absent), run the tuning grid's missing runs, write its tables,
check that configs/experiment/tnews_self_pretrained.yaml holds the epsilons the tuning chose, run the
main grids' missing runs, copy the grids' records back into the study folder, and write its tables
and analyses. A grid whose runs all have a record starts no run. remake: the main grids' 20 runs
again into a folder of their own (results/evidence/remake; the committed records do not count as
done, so the best weights are made again), then compare. compare: each record of FOLDER against the
committed one of the same file name (experiments.report.reproduction), a line per run and compare.md.
The overrides go to every pretraining and run (paths.clue_dir=..., hydra/launcher=joblib).
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from experiments import PROJECT_ROOT, records
from experiments.commands import cli
from experiments.commands import study as study_command
from experiments.errors import UserError
from experiments.report import reproduction, summary
from experiments.report.preregistered import frame, tuning_choice

STUDY = PROJECT_ROOT / "docs" / "evidence" / "tnews-self-pretrained"
RESULTS = PROJECT_ROOT / "results" / "evidence"
TUNE = "tnews_self_pretrained_tune"
MAIN = ("tnews_self_pretrained", "tnews_random_init")  # the pretrained arms and the random-init baseline
TEXT_ATTACK = "text-attack"  # the addendum's folder in the study's: the re-made runs' records, text-attacked
CONFIGURED = PROJECT_ROOT / "configs" / "experiment" / "tnews_self_pretrained.yaml"  # study.epsilon
PRETRAIN = [
    "task=tnews",
    "model=tiny",
    "seed=0",
    "pretrain.name=tnews-tiny-mlm",
    "pretrain.max_steps=15000",
    "pretrain.eval_every=1000",
    "pretrain.resume=true",
]


def python(*args: str) -> None:
    """Run ``python -m ...`` of this environment; a failure ends make evidence with its exit code."""
    print("+ python " + " ".join(args), flush=True)
    done = subprocess.run([sys.executable, *args], cwd=PROJECT_ROOT)
    if done.returncode:
        raise UserError(
            f"python {' '.join(args)} failed (exit code {done.returncode}); fix what it said, then "
            "run make evidence again: it goes on where it stopped"
        )


def grid(experiment: str, overrides: list[str]) -> list[list[str]]:
    """The overrides of each job of ``experiment``'s sweep (hydra.sweeper.params, replaced by any of
    ``overrides`` that sets the same key or sweeps), as Hydra's basic sweeper expands them."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from experiments import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", [f"experiment={experiment}"], return_hydra_config=True)
    parsed = OverridesParser.create().parse_overrides(
        [f"{k}={v}" for k, v in (OmegaConf.to_container(cfg.hydra.sweeper.params) or {}).items()]
    )
    params = {o.key_or_group: o for o in parsed}
    fixed = []
    for o, text in zip(OverridesParser.create().parse_overrides(overrides), overrides):
        if o.is_sweep_override() or o.key_or_group in params:
            params[o.key_or_group] = o
        else:
            fixed.append(text)
    axes = [
        [f"{key}={value}" for value in o.sweep_string_iterator()]
        if o.is_sweep_override()
        else [f"{key}={o.get_value_element_as_str()}"]
        for key, o in params.items()
    ]
    return [[*fixed, *job] for job in itertools.product(*axes)]


def record_files(experiment: str, results_dir: Path, overrides: list[str]) -> list[Path]:
    """The record file of each run of ``experiment``'s grid, as the run names it (no run is started)."""
    files = []
    for job in grid(experiment, overrides):
        cfg = cli.compose([f"experiment={experiment}", *job, f"paths.results_dir={results_dir}"])
        resolved = records.with_pretraining(OmegaConf.to_container(cfg, resolve=True))  # model.pretrained
        if (path := records.record_path(results_dir, resolved)) not in files:
            files.append(path)
    return files


def sweep(experiment: str, results_dir: Path, overrides: list[str]) -> list[Path]:
    """Run ``experiment``'s grid into ``results_dir`` unless every run has a record; its record files."""
    files = record_files(experiment, results_dir, overrides)
    done = [f for f in files if records.read_record(f, records.DONE) is not None]
    print(f"{experiment}: {len(done)} of {len(files)} runs have a record in {results_dir / 'runs'}", flush=True)
    if len(done) < len(files):
        python(
            "-m",
            "experiments.commands.run",
            "-m",
            f"experiment={experiment}",
            "trainer.skip_completed=true",
            "trainer.resume=true",
            f"paths.results_dir={results_dir}",
            *overrides,
        )
        missing = [f for f in files if records.read_record(f, records.DONE) is None]
        if missing:
            raise UserError(
                f"{missing[0]}: the sweep of {experiment} ended without this record "
                f"({len(missing)} missing); see its log under {results_dir / 'logs'}, then run again"
            )
    return files


def pretrained_model(overrides: list[str]) -> Path:
    """The study's pretrained model folder, pretrained first if it has no pretrain record."""
    folder = Path(cli.compose([f"experiment={TUNE}", *overrides]).model.checkpoint_dir)
    if not (folder / records.PRETRAIN_RECORD_FILE).is_file():
        python("-m", "experiments.commands.pretrain", *PRETRAIN, *overrides)
    return folder


def check_epsilons(tune_dir: Path, overrides: list[str]) -> None:
    """configs/experiment/tnews_self_pretrained.yaml's study.epsilon must be what the tuning chose."""
    chosen = {m: c["chosen"] for m, c in tuning_choice(frame(records.load_records(tune_dir))).items()}
    configured = OmegaConf.to_container(cli.compose([f"experiment={MAIN[0]}", *overrides]).study.epsilon)
    wrong = {m: configured.get(m) for m, eps in chosen.items() if configured.get(m) != eps}
    if wrong:
        want = ", ".join(f"{m}: {eps:g}" for m, eps in chosen.items())
        raise UserError(
            f"{CONFIGURED.relative_to(PROJECT_ROOT)}: study.epsilon has {wrong}, but the tuning chose "
            f"{{{want}}} ({tune_dir / 'tuning.md'}, PLAN.md's rule); put those there, then run make "
            "evidence again"
        )


def copy_new(files, folder: Path) -> None:
    """Copy each of ``files`` into ``folder`` unless its content is there already (a local newer record
    is never replaced by the copy the other way round: only what differs is copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        if not (folder / f.name).is_file() or (folder / f.name).read_bytes() != f.read_bytes():
            shutil.copyfile(f, folder / f.name)


def run_study(overrides: list[str], study_dir: Path = STUDY, results_dir: Path = RESULTS) -> None:
    model = pretrained_model(overrides)
    tune_dir, main_dir = results_dir / "tune", results_dir / "main"
    # The committed records count as done: a fresh clone (or a machine that lost results/) goes on where
    # the study stopped instead of running them again; a local record of the same name is kept.
    for committed, local in ((study_dir / "tuning", tune_dir), (study_dir, main_dir)):
        copy_new(
            [f for f in sorted((committed / "runs").glob("*.json")) if not (local / "runs" / f.name).exists()],
            local / "runs",
        )
    tuned = sweep(TUNE, tune_dir, overrides)
    summary.write_all(tune_dir)
    study_command.write("tuning", tune_dir)
    check_epsilons(tune_dir, overrides)
    made = [f for experiment in MAIN for f in sweep(experiment, main_dir, overrides)]
    copy_new(made, study_dir / "runs")
    copy_new(tuned, study_dir / "tuning" / "runs")
    copy_new([model / records.PRETRAIN_RECORD_FILE], study_dir)
    for path in [
        *summary.write_all(study_dir),
        *summary.write_all(study_dir / "tuning"),
        study_command.write("tuning", study_dir / "tuning"),
        study_command.write("main", study_dir),
        *text_attack_tables(study_dir / TEXT_ATTACK),
    ]:
        print(path)


def text_attack_tables(folder: Path) -> list[Path]:
    """The addendum's table and analysis (PLAN.md, 2026-12-06) from ``folder``/runs, the re-made main grid's
    records with their text attack (made by ``remake``, then ``make attack``); none before they exist."""
    if not any((folder / "runs").glob("*.json")):
        return []
    return [*summary.write_all(folder), study_command.write("text-attack", folder)]


def run_compare(folder: Path, against: Path = STUDY / "runs", out: Path | None = None) -> Path:
    folder = Path(folder)
    if not reproduction.runs_folder(folder).is_dir():
        raise UserError(f"{folder}: no such folder of run records")
    table = reproduction.compare(folder, against)
    for line in reproduction.lines(table):
        print(line)
    out = Path(out) if out else folder / "compare.md"
    shown = [
        str(p.resolve().relative_to(PROJECT_ROOT)) if p.resolve().is_relative_to(PROJECT_ROOT) else str(p)
        for p in (reproduction.runs_folder(folder), reproduction.runs_folder(against))
    ]
    records.write_text_atomic(out, reproduction.markdown(table, *shown))
    print(f"{reproduction.summary(table)}; written: {out}")
    return out


def remake(overrides: list[str], out: Path = RESULTS / "remake") -> Path:
    """The main grids' runs again into ``out`` (its own records only count as done), then compared."""
    pretrained_model(overrides)
    for experiment in MAIN:
        sweep(experiment, out, overrides)
    return run_compare(out)


def main(argv=None) -> int:
    p = cli.parser("experiments.commands.evidence", __doc__)
    steps = p.add_subparsers(dest="step", required=True, parser_class=argparse.ArgumentParser)
    s = steps.add_parser("study", help="the study from scratch or where it stopped, then its tables (make evidence)")
    s.add_argument("overrides", nargs="*", metavar="key=value", help=cli.OVERRIDES_HELP)
    r = steps.add_parser("remake", help="the main grids' 20 runs again into a folder of their own, then compare")
    r.add_argument("--out", type=Path, default=RESULTS / "remake", help="default: results/evidence/remake")
    r.add_argument("overrides", nargs="*", metavar="key=value", help=cli.OVERRIDES_HELP)
    c = steps.add_parser("compare", help="each record of FOLDER against the committed one of the same file name")
    c.add_argument("folder", type=Path, help="a results folder (with runs/) or a folder of records")
    c.add_argument("--against", type=Path, default=STUDY / "runs", help="default: the study's committed runs/")
    c.add_argument("--out", type=Path, default=None, help="the markdown (default: FOLDER/compare.md)")
    return cli.main(
        p,
        lambda args: {
            "study": lambda: run_study(args.overrides),
            "remake": lambda: remake(args.overrides, args.out),
            "compare": lambda: run_compare(args.folder, args.against, args.out),
        }[args.step](),
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
