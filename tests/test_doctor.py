"""`make doctor` on this CPU: it passes, its grid estimate is the arithmetic it states, and a
planted failure (a learning rate that makes the loss non-finite) fails with its fix."""

from __future__ import annotations

import json
import math
import re

import pytest

from experiments.commands import doctor
from experiments.machine import estimate


@pytest.fixture
def fixed_rate(monkeypatch):
    """This CPU's rate, fixed so that the grid's estimate can be recomputed here."""
    monkeypatch.setattr(estimate, "cpu_flops_per_second", lambda seconds=0.3: 1e11)
    return 1e11


@pytest.mark.slow
def test_doctor_passes_on_cpu_and_estimates_the_grid(clue_dir, tmp_path, capsys, fixed_rate):
    sums = tmp_path / "checksums.yaml"  # no known sums: the fixture is not the official data
    sums.write_text("clue: {}\nmodels: {}\n")
    code = doctor.main(
        [
            "--tasks",
            "tnews",
            "--methods",
            "baseline,fgm",
            "--seeds",
            "0,1",
            "--check-methods",
            "baseline,fgm,pgd",
            f"paths.clue_dir={clue_dir}",
            f"paths.models_dir={tmp_path / 'models'}",
            f"download.checksums={sums}",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "FAIL" not in out and out.rstrip().splitlines()[-1].startswith("all checks passed")
    for name in ("fgm", "pgd"):
        assert f"ok    {name}: " in out and f"{name}: " in out
        line = next(ln for ln in out.splitlines() if ln.startswith(f"ok    {name}: "))
        assert line.endswith("embedding matrix restored exactly"), line
    assert f"ok    tnews data: {clue_dir / 'tnews_public'}: 5 files, 0 match their known sha256" in out
    pretrain = next(ln for ln in out.splitlines() if ln.startswith("ok    pretrain: "))  # make pretrain's step
    assert re.fullmatch(
        r"ok    pretrain: \d+\.\d{3} s/step \(masked LM, \d+ masked tokens, AdamW\), loss \d+\.\d{4}", pretrain
    )
    assert "note  bert_base checkpoint: " in out and "`make model MODEL=bert_base`" in out
    # The fixture's 400 training / 100 dev examples, TNEWS's 10 epochs, batch 32, length 128:
    step = 3 * 32 * 128 * 12 * 2 * (4 * 768**2 + 2 * 768 * 3072 + 2 * 128 * 768) / fixed_rate
    run = 10 * math.ceil(400 / 32) * step + 10 * (100 / 32) * step / 3
    grid = 2 * (run * 1.0 + run_fgm(run, step))
    assert (
        f"ok    grid: up to {estimate.duration(grid)} on this CPU; longest run {estimate.duration(run_fgm(run, step))} "
        in out
    )


def run_fgm(run, step):
    """The FGM run: its train steps cost 1.68 baseline steps (make bench), its dev passes the same."""
    train = 10 * math.ceil(400 / 32) * step
    return train * 1.68 + (run - train)


@pytest.mark.slow
def test_planted_failures_print_their_fixes(clue_dir, capsys, fixed_rate):
    """A loss that turns non-finite, and data that do not match the official sums."""
    code = doctor.main(
        [
            "--tasks",
            "tnews",
            "--methods",
            "baseline",
            "--seeds",
            "0",
            "--check-methods",
            "baseline",
            f"paths.clue_dir={clue_dir}",
            "trainer.learning_rate=1e30",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    lines = out.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("FAIL  baseline: non-finite loss"))
    assert lines[i + 1] == (
        "      fix: retry with trainer.precision=float32 trainer.jit_compile=false (and a lower "
        "trainer.learning_rate if set); if that passes, train with those settings, else check "
        "the driver and CUDA set-up"
    )
    i = next(i for i, ln in enumerate(lines) if ln.startswith("FAIL  tnews data: "))
    assert f"{clue_dir / 'tnews_public'}/dev.json: sha256 " in lines[i] and "as in checksums.yaml" in lines[i]
    assert lines[i + 1] == f"      fix: delete {clue_dir / 'tnews_public'}/ and run `make data TASKS=tnews`"
    assert lines[-1].startswith("2 check(s) FAILED")


@pytest.mark.slow
def test_doctor_names_a_folder_that_make_pretrain_wrote(clue_dir, tmp_path, capsys, fixed_rate):
    from tests.helpers.google_checkpoint import fixture_vocab, write_google_checkpoint

    folder = tmp_path / "pretrained" / "tnews_tiny_0123456789"
    write_google_checkpoint(folder, fixture_vocab())
    (folder / "pretrain_record.json").write_text(
        json.dumps(
            {
                "id": "tnews_tiny_0123456789",
                "status": "complete",
                "tasks": ["tnews"],
                "model": "tiny",
                "steps": 300,
                "start": {"init": "random"},
                "history": [{"step": 300, "loss": 2.0, "accuracy": 0.5}],
            }
        )
    )
    sums = tmp_path / "checksums.yaml"  # no known sums: the fixture is not the official data
    sums.write_text("clue: {}\nmodels: {}\n")
    code = doctor.main(
        [
            "--tasks",
            "tnews",
            "--methods",
            "baseline",
            "--seeds",
            "0",
            "--check-methods",
            "baseline",
            f"paths.clue_dir={clue_dir}",
            "model=tiny",
            f"model.checkpoint_dir={folder}",
            f"download.checksums={sums}",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert (
        "ok    tiny checkpoint: made by `make pretrain`: tnews_tiny_0123456789, 300 steps on tnews "
        "(runs record model.pretrained)"
    ) in out
    files = len(list(folder.iterdir()))  # config, vocab, checkpoint index, data and meta, the record
    assert f"ok    tiny checkpoint: {folder}: {files} files, 0 match their known sha256" in out
