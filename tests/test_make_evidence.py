"""make evidence (experiments/commands/evidence.py) on the committed study: every run of its grids has a
record, so it starts no run, and it rebuilds the committed tables and analyses byte for byte."""

from __future__ import annotations

import shutil

import pytest

from experiments.commands import evidence
from experiments.errors import UserError
from tests.test_evidence import STUDY, TABLE_FILES


@pytest.mark.slow
def test_the_committed_study_starts_no_run_and_rebuilds_its_tables(tmp_path, monkeypatch, capsys):
    study = tmp_path / "study"
    for sub in ("runs", "tuning/runs", "text-attack/runs"):
        shutil.copytree(STUDY / sub, study / sub)
    shutil.copy(STUDY / "pretrain_record.json", study)
    model = tmp_path / "models" / "pretrained" / "tnews-tiny-mlm"  # the study's model folder, its record only
    model.mkdir(parents=True)
    shutil.copy(STUDY / "pretrain_record.json", model)
    started = []
    monkeypatch.setattr(evidence, "python", lambda *args: started.append(args))
    evidence.run_study([f"paths.models_dir={tmp_path / 'models'}"], study, tmp_path / "results")
    assert started == []  # no pretraining, no sweep
    out = capsys.readouterr().out
    for line in (
        "tnews_self_pretrained_tune: 14 of 14 runs have a record",
        "tnews_self_pretrained: 15 of 15 runs have a record",
        "tnews_random_init: 5 of 5 runs have a record",
    ):
        assert line in out
    assert sorted(p.name for p in (tmp_path / "results" / "main" / "runs").iterdir()) == sorted(
        p.name for p in (STUDY / "runs").iterdir()
    )  # the committed records, counted as done
    for folder, made in (
        (STUDY, TABLE_FILES + ("analysis.md",)),
        (STUDY / "tuning", TABLE_FILES + ("tuning.md",)),
        (STUDY / "text-attack", TABLE_FILES + ("text_attack.csv", "text_attack.png", "analysis.md")),
    ):
        for name in made:
            if (folder / name).exists():
                copy = study / folder.relative_to(STUDY) / name
                assert copy.read_bytes() == (folder / name).read_bytes(), f"{copy} differs from {folder / name}"


def test_a_study_epsilon_other_than_the_tunings_choice_stops_it(tmp_path):
    shutil.copytree(STUDY / "tuning" / "runs", tmp_path / "runs")
    evidence.check_epsilons(tmp_path, [])  # the committed config holds the choice
    with pytest.raises(
        UserError,
        match=r"^configs/experiment/tnews_self_pretrained\.yaml: study\.epsilon has "
        r"\{'fgm': 0\.1\}, but the tuning chose \{fgm: 0\.03, gp: 0\.1\} ",
    ):
        evidence.check_epsilons(tmp_path, ["study.epsilon.fgm=0.1"])
