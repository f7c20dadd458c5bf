"""The committed study (docs/evidence/tnews-self-pretrained/): its records rebuild its committed
tables byte for byte with the commands make evidence runs (no TensorFlow, a few seconds)."""

import shutil
from pathlib import Path

import pytest

from experiments import PROJECT_ROOT
from experiments.commands import study, table

STUDY = PROJECT_ROOT / "docs" / "evidence" / "tnews-self-pretrained"
# make table's text outputs (the pictures' CSVs hold their numbers; PNG bytes carry no promise)
TABLE_FILES = ("table.md", "summary.csv", "seeds.csv", "accuracy.csv", "curves.csv", "robustness.csv")


def rebuilt(folder: Path, tmp_path: Path, step: str) -> Path:
    copy = tmp_path / folder.name
    shutil.copytree(folder / "runs", copy / "runs")
    table.main([str(copy)])
    study.main([step, str(copy)])
    return copy


@pytest.mark.parametrize("sub, step", [("", "main"), ("tuning", "tuning")])
def test_the_committed_records_rebuild_the_committed_tables(tmp_path, sub, step):
    folder = STUDY / sub if sub else STUDY
    made = sorted(f for f in TABLE_FILES + ("analysis.md" if step == "main" else "tuning.md",) if (folder / f).exists())
    if "table.md" not in made:
        pytest.skip(f"{folder}: no committed table.md yet")
    copy = rebuilt(folder, tmp_path, step)
    for name in made:
        assert (copy / name).read_bytes() == (folder / name).read_bytes(), f"{folder / name} differs from its records"
