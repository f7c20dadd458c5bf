"""make table with accuracy under attack: the robust numbers of table.md, summary.csv, seeds.csv and
robustness.csv equal an independent computation from synthetic records (no TensorFlow)."""

from __future__ import annotations

import statistics

import pandas as pd
import pytest
from scipy import stats

from experiments import records
from experiments.report import summary
from tests.helpers.synthetic_records import settings

EPS = ("0.05", "0.1")
# method -> seed -> (best dev accuracy, clean accuracy of the attacked examples, {eps: robust accuracy})
RUNS = {
    "baseline": {
        0: (0.50, 0.50, {"0.05": 0.30, "0.1": 0.10}),
        1: (0.52, 0.52, {"0.05": 0.34, "0.1": 0.12}),
        2: (0.51, 0.51, {"0.05": 0.31, "0.1": 0.08}),
    },
    "fgm": {
        0: (0.53, 0.53, {"0.05": 0.40, "0.1": 0.20}),
        1: (0.54, 0.54, {"0.05": 0.41, "0.1": 0.25}),
        2: (0.52, 0.52, {"0.05": 0.38, "0.1": 0.21}),
    },
    "gp": {0: (0.51, 0.51, {"0.05": 0.33, "0.1": 0.11}), 1: (0.53, 0.53, {"0.05": 0.36, "0.1": 0.15})},  # no seed 2
}


def attacked(method, seed, best, clean, robust):
    s = settings("tnews", method, seed, model="tiny")
    return {
        "status": "complete",
        "task": "tnews",
        "model": "tiny",
        "method": method,
        "seed": seed,
        "settings_id": records.settings_id(s),
        "best_dev_acc": best,
        "final_dev_acc": best,
        "robust_dev_acc": robust,
        "attack": {
            "kind": "pgd_l2_token_embeddings",
            "epsilons": [float(e) for e in robust],
            "steps": 10,
            "step_size_ratio": 2.5,
            "random_start": False,
            "perturb_special_tokens": False,
            "max_samples": None,
            "weights": "best",
            "examples": 100,
            "clean_dev_acc": clean,
            "embedding_norm": 0.3 + seed / 100,
            "radii": {e: float(e) * 1.5 for e in robust},
        },
        "history": [{"epoch": 1, "dev_acc": best}],
        "settings": s,
        "config": s,
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    for method, seeds in RUNS.items():
        for seed, run in seeds.items():
            rec = attacked(method, seed, *run)
            records.write_json_atomic(records.record_path(results, rec["settings"]), rec)
    summary.write_all(results)
    return results


def robust(method, key):
    """{seed: accuracy in %} of ``key`` (an eps, or "clean") from RUNS."""
    return {s: 100 * (r[1] if key == "clean" else r[2][key]) for s, r in RUNS[method].items()}


def test_summary_robust_numbers_equal_an_independent_computation(results):
    summary = pd.read_csv(results / "summary.csv").set_index("method")
    for method in RUNS:
        for key in ("clean", *EPS):
            acc = robust(method, key)
            row = summary.loc[method]
            assert row[f"robust_{key}_n"] == len(acc)
            assert row[f"robust_{key}_mean"] == pytest.approx(statistics.mean(acc.values()), abs=1e-4)
            assert row[f"robust_{key}_std"] == pytest.approx(statistics.stdev(acc.values()), abs=1e-4)
            if method == "baseline":
                assert pd.isna(row[f"robust_{key}_delta_vs_baseline"])
                continue
            base = robust("baseline", key)
            diffs = [acc[s] - base[s] for s in sorted(acc.keys() & base.keys())]
            d = statistics.mean(diffs)
            half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
            assert row[f"robust_{key}_n_paired"] == len(diffs)
            assert (
                row[f"robust_{key}_delta_vs_baseline"],
                row[f"robust_{key}_delta_ci_low"],
                row[f"robust_{key}_delta_ci_high"],
            ) == pytest.approx((d, d - half, d + half), abs=1e-4)
    # the clean columns are untouched by the attack's: best dev accuracy as before
    assert summary.loc["fgm", "mean"] == pytest.approx(53.0, abs=1e-4)


def test_seeds_and_robustness_csv_carry_the_records_values(results):
    seeds = pd.read_csv(results / "seeds.csv")
    for r in seeds.itertuples():
        _, _, acc = RUNS[r.method][r.seed]
        assert [seeds.at[r.Index, f"robust_{e}"] for e in EPS] == pytest.approx([100 * acc[e] for e in EPS], abs=1e-4)
    curve = pd.read_csv(results / "robustness.csv")
    for method in RUNS:
        c = curve[curve.method == method].set_index("epsilon")
        assert list(c.index) == [0.0, 0.05, 0.1]  # eps = 0 is the clean accuracy
        for eps, key in ((0.0, "clean"), (0.05, "0.05"), (0.1, "0.1")):
            acc = list(robust(method, key).values())
            lo, hi = stats.t.interval(0.95, len(acc) - 1, loc=statistics.mean(acc), scale=stats.sem(acc))
            assert (c.at[eps, "n"], c.at[eps, "mean"], c.at[eps, "ci_low"], c.at[eps, "ci_high"]) == pytest.approx(
                (len(acc), statistics.mean(acc), lo, hi), abs=1e-4
            )
    assert (results / "robustness.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_table_md_shows_the_robust_cells(results):
    md = (results / "table.md").read_text(encoding="utf-8")
    section = md[md.index("## Accuracy under attack") :]
    assert "steps=10, step_size_ratio=2.5" in section and "different settings" not in section
    assert "Mean absolute radius (over runs and examples): ε=0.05: 0.075, ε=0.1: 0.15" in section
    # fgm - baseline at eps 0.05: 10, 7, 7 -> mean 8, sd 1.7321, t(2) 4.3027 x 1.7321 / sqrt(3) = 4.3027;
    # at eps 0.1: 10, 13, 13 -> mean 12, the same half-width
    assert (
        "| fgm | 53.00 ± 1.00 (n=3) | 39.67 ± 1.53 (n=3) | +8.00 [+3.70, +12.30] (3 seeds) | "
        "22.00 ± 2.65 (n=3) | +12.00 [+7.70, +16.30] (3 seeds) |" in section
    )
    assert "| baseline | 51.00 ± 1.00 (n=3) | 31.67 ± 2.08 (n=3) |  | 10.00 ± 2.00 (n=3) |  |" in section


def test_a_table_without_attacks_has_no_robust_columns(tmp_path):
    for method, seeds in RUNS.items():
        for seed, run in seeds.items():
            rec = attacked(method, seed, *run)
            for key in ("robust_dev_acc", "attack"):
                rec.pop(key)
            records.write_json_atomic(records.record_path(tmp_path, rec["settings"]), rec)
    summary.write_all(tmp_path)
    assert not any("robust" in c for c in pd.read_csv(tmp_path / "summary.csv").columns)
    assert not any("robust" in c for c in pd.read_csv(tmp_path / "seeds.csv").columns)
    assert "under attack" not in (tmp_path / "table.md").read_text(encoding="utf-8")
    assert not (tmp_path / "robustness.png").exists()
