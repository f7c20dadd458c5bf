"""`python -m experiments.commands.evidence compare`: re-made records against committed ones of the same
file name, on synthetic records (equal ones, one differing field of each kind, a missing one)."""

from __future__ import annotations

import copy
import json

from experiments.commands import evidence


def record(seed: int) -> dict:
    return {
        "status": "complete",
        "task": "tnews",
        "model": "tiny",
        "method": "fgm",
        "seed": seed,
        "best_dev_acc": 0.4988,
        "best_epoch": 2,
        "final_dev_acc": 0.4988,
        "robust_dev_acc": {"0.02": 0.4075, "0.05": 0.2715, "0.1": 0.084},
        "history": [
            {"epoch": 1, "dev_acc": 0.4926, "train_loss": 1.7464314796041691, "learning_rate": 1e-3},
            {"epoch": 2, "dev_acc": 0.4988, "train_loss": 1.5, "learning_rate": 5e-4},
        ],
        "timings": {"total_seconds": 400.0 + seed},
        "finished_at": "2026-12-06T05:55:19+0000",
    }


def write(folder, name, rec):
    (folder / "runs").mkdir(parents=True, exist_ok=True)
    (folder / "runs" / name).write_text(json.dumps(rec, indent=2))


def test_compare_names_each_differing_field_and_writes_markdown(tmp_path, capsys):
    committed, remade = tmp_path / "committed", tmp_path / "remade"
    names = [f"tnews_tiny_fgm_seed{s}_0596a6f211.json" for s in range(5)]
    for s, name in enumerate(names):
        write(committed, name, record(s))
    same = record(0)
    same["timings"]["total_seconds"], same["finished_at"] = 999.0, "2027-01-01T00:00:00+0000"  # not compared
    write(remade, names[0], same)
    loss = record(1)
    loss["history"][0]["train_loss"] = 1.7464314796041693  # the last digit
    write(remade, names[1], loss)
    robust = record(2)
    robust["robust_dev_acc"]["0.05"] = 0.2716
    write(remade, names[2], robust)
    best = copy.deepcopy(record(3))
    best["best_dev_acc"], best["history"][1]["dev_acc"] = 0.4991, 0.4991
    write(remade, names[3], best)
    write(remade, "tnews_tiny_gp_seed0_147e38b5a4.json", record(0))  # no committed record of that name

    assert evidence.main(["compare", str(remade), "--against", str(committed / "runs")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        f"{names[0]}: equal to every digit",
        f"{names[1]}: differs: epoch 1 train_loss: 1.7464314796041691 -> 1.7464314796041693",
        f"{names[2]}: differs: robust_dev_acc[0.05]: 0.2715 -> 0.2716",
        f"{names[3]}: differs: best_dev_acc: 0.4988 -> 0.4991; epoch 2 dev_acc: 0.4988 -> 0.4991",
        f"{names[4]}: not re-made",
        "tnews_tiny_gp_seed0_147e38b5a4.json: not committed",
        f"1 of 4 re-made runs equal to every digit; written: {remade / 'compare.md'}",
    ]
    text = (remade / "compare.md").read_text()
    assert "\n**1 of 4 re-made runs equal to every digit.**\n" in text
    assert (
        f"from the records in `{remade / 'runs'}` against those of the same file name in `{committed / 'runs'}`" in text
    )
    table = text[text.index("| run |") :].splitlines()
    assert table[:4] == [
        "| run | verdict | what differs |",
        "|---|---|---|",
        f"| {names[0]} | equal |  |",
        f"| {names[1]} | differs | epoch 1 train_loss: 1.7464314796041691 -> 1.7464314796041693 |",
    ]
    assert len(table) == 2 + 6


def test_a_missing_epoch_and_status_are_differences(tmp_path, capsys):
    committed, remade = tmp_path / "committed", tmp_path / "remade"
    name = "tnews_tiny_baseline_seed0_0210c500b7.json"
    write(committed, name, record(0))
    short = record(0)
    short["status"], short["history"] = "diverged", short["history"][:1]
    write(remade, name, short)
    out = tmp_path / "elsewhere.md"
    evidence.main(["compare", str(remade / "runs"), "--against", str(committed), "--out", str(out)])
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"{name}: differs: status: 'complete' -> 'diverged'; epochs: 2 -> 1"
    assert out.is_file() and not (remade / "compare.md").exists()
