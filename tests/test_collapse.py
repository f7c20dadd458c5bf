"""A collapsed run (best dev accuracy at the dev set's majority-class share, within 2 binomial standard errors)
is named in its record, in the log's last line and in make table's files, and is never averaged."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from omegaconf import OmegaConf

from experiments import records
from experiments.config import compose
from experiments.report import summary

N_DEV, SHARE = 10_000, 0.1  # p + 2 sqrt(p (1 - p) / n) = 0.1 + 2 * 0.003 = 0.106
THRESHOLD = 0.106


def config(method="fgm", seed=0, **extra) -> dict:
    overrides = ["model=tiny", f"method={method}", f"seed={seed}", *(f"{k}={v}" for k, v in extra.items())]
    return OmegaConf.to_container(compose(overrides), resolve=True)


def record(best: float, cfg: dict | None = None, ending: dict | None = None) -> dict:
    history = [{"epoch": 1, "dev_acc": best - 0.002}, {"epoch": 2, "dev_acc": best}]
    facts = {"num_labels": 10, "train_samples": 100, "dev_samples": N_DEV, "dev_majority_share": SHARE}
    return records.run_record(cfg or config(), history, ending or {}, facts, {"total_seconds": 1.0}, None, {}, None)


def test_the_majority_share_of_the_dev_labels():
    assert records.majority_share([2, 2, 1, 0, 2, -1]) == 3 / 5  # -1: unlabelled, left out
    assert records.majority_share([]) is None
    assert records.collapse_threshold(SHARE, N_DEV) == pytest.approx(SHARE + 2 * math.sqrt(0.09 / N_DEV))
    assert records.collapse_threshold(SHARE, N_DEV) == pytest.approx(THRESHOLD)


@pytest.mark.parametrize(
    "best, collapsed", [(0.1, True), (0.1059, True), (0.1061, False), (0.5, False), (0.05, True)]
)  # below the majority class: no better either
def test_the_collapse_rule_on_a_synthetic_history(best, collapsed):
    r = record(best)
    assert (r["status"], r["collapsed"], r["dev_majority_share"]) == ("complete", collapsed, SHARE)
    hint = (
        "; COLLAPSED: no better than always answering the most frequent dev class (0.1000 of the dev set): "
        "lower method.epsilon"
    )
    assert records.outcome(r) == f"best dev acc {best:.4f} (epoch 2), final {best:.4f}" + hint * collapsed


def test_a_diverged_run_or_one_without_the_share_is_not_collapsed():
    assert record(0.1, ending={"diverged_at": {"epoch": 3, "step": 5}})["collapsed"] is False
    assert records.collapsed(0.1, None, N_DEV) is False  # records made before the share was stored
    assert records.collapsed(None, SHARE, N_DEV) is False


def write(results, method, seed, best):
    r = record(best, config(method, seed))
    records.write_json_atomic(records.record_path(results, r["config"]), r)


def test_the_table_lists_a_collapsed_run_and_does_not_average_it(tmp_path):
    for seed, (base, fgm) in enumerate([(0.50, 0.52), (0.51, 0.1005), (0.49, 0.53)]):
        write(tmp_path, "baseline", seed, base)
        write(tmp_path, "fgm", seed, fgm)
    write(tmp_path, "gp", 0, 0.104)
    summary.write_all(tmp_path)
    md = (tmp_path / "table.md").read_text(encoding="utf-8")
    assert (
        "from 7 complete run records in `runs/`; 2 of the complete ones collapsed to the dev set's majority "
        "class (counted and listed, never averaged: lower method.epsilon)." in md
    )
    assert "| 1 | 51.00 | collapsed (10.05, the majority class; lower method.epsilon) |  |" in md
    # FGM's mean and its paired difference to the baseline over seeds 0 and 2 only: (2 + 4) / 2, t(1) interval
    assert "| fgm | 52.50 ± 0.71 (n=2, 1 collapsed: lower method.epsilon) | +3.00 [-9.71, +15.71] (2 seeds) |" in md
    assert "| gp | – (n=0, 1 collapsed: lower method.epsilon) | no complete run |" in md
    seeds = pd.read_csv(tmp_path / "seeds.csv")
    assert seeds.set_index(["method", "seed"]).status.to_dict() == {
        ("baseline", 0): "complete",
        ("baseline", 1): "complete",
        ("baseline", 2): "complete",
        ("fgm", 0): "complete",
        ("fgm", 1): "collapsed",
        ("fgm", 2): "complete",
        ("gp", 0): "collapsed",
    }
    sums = pd.read_csv(tmp_path / "summary.csv").set_index("method")
    assert sums.n.to_dict() == {"baseline": 3, "fgm": 2, "gp": 0}
    assert sums.n_collapsed.to_dict() == {"baseline": 0, "fgm": 1, "gp": 1}
    assert sums.loc["fgm", "mean"] == pytest.approx(52.5)
