"""make table with the text attack: the numbers of table.md, summary.csv, seeds.csv and text_attack.csv equal an
independent computation from synthetic records, and text_attack.png is drawn (no TensorFlow)."""

from __future__ import annotations

import statistics

import pandas as pd
import pytest
from scipy import stats

from experiments import records
from experiments.report import summary

# method -> seed -> (accuracy under the text attack, success rate, random-substitution accuracy, transfer accuracy)
RUNS = {
    "baseline": {0: (0.20, 0.60, 0.45, None), 1: (0.22, 0.58, 0.46, None), 2: (0.18, 0.64, 0.44, None)},
    "fgm": {0: (0.25, 0.50, 0.47, 0.40), 1: (0.28, 0.47, 0.49, 0.41), 2: (0.24, 0.53, 0.46, 0.39)},
    "gp": {0: (0.30, 0.42, 0.48, 0.44), 1: (0.31, 0.40, 0.50, 0.45)},  # no seed 2
}
CLEAN = 0.5


def settings(method, seed):
    s = {
        "task": {"name": "tnews", "num_labels": 15, "max_train_samples": None},
        "method": {"_target_": f"experiments.train.methods.{method}", "name": method},
        "model": {"name": "tiny", "learning_rate": 1e-3},
        "trainer": {"epochs": 1, "batch_size": 32},
        "seed": seed,
    }
    if method != "baseline":
        s["method"]["epsilon"] = 0.1
    return s


def record(method, seed, acc, success, random, transfer):
    s = settings(method, seed)
    rec = {
        "status": "complete",
        "task": "tnews",
        "model": "tiny",
        "method": method,
        "seed": seed,
        "settings_id": records.settings_id(s),
        "best_dev_acc": CLEAN,
        "final_dev_acc": CLEAN,
        "text_attack": {
            "kind": "greedy_char_substitution",
            "importance": "mask_drop",
            "sources": ["homophone", "visual", "traditional"],
            "budget": 0.1,
            "max_queries": 500,
            "max_samples": 100,
            "seed": 0,
            "random_baseline": True,
            "weights": "best",
            "examples": 100,
            "clean_acc": CLEAN,
            "acc": acc,
            "attacked": 50,
            "success_rate": success,
            "changed_share_mean": 0.05 + seed / 100,
            "queries_mean": 20.0 + seed,
            "random": {"acc": random, "success_rate": 0.1},
        },
        "history": [{"epoch": 1, "dev_acc": CLEAN}],
        "settings": s,
        "config": s,
    }
    if transfer is not None:
        rec["text_attack_transfer"] = {f"tnews_tiny_baseline_seed{seed}_x": {"acc": transfer, "clean_acc": CLEAN}}
    return rec


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    for method, seeds in RUNS.items():
        for seed, run in seeds.items():
            rec = record(method, seed, *run)
            records.write_json_atomic(records.record_path(results, rec["settings"]), rec)
    summary.write_all(results)
    return results


def column(method, k):
    return {seed: 100 * r[k] for seed, r in RUNS[method].items() if r[k] is not None}


def test_summary_equals_an_independent_computation(results):
    table = pd.read_csv(results / "summary.csv").set_index("method")
    for method in RUNS:
        for k, key in enumerate(
            ("text_attack_acc", "text_attack_success", "text_attack_random", "text_attack_transfer")
        ):
            values = column(method, k)
            if not values:
                assert table.loc[method, f"{key}_n"] == 0
                continue
            assert table.loc[method, f"{key}_mean"] == pytest.approx(statistics.mean(values.values()), abs=1e-4)
            assert table.loc[method, f"{key}_std"] == pytest.approx(statistics.stdev(values.values()), abs=1e-4)
            if method == "baseline" or key == "text_attack_transfer":
                continue
            base = column("baseline", k)
            diffs = [values[s] - base[s] for s in values]
            lo, hi = stats.t.interval(0.95, len(diffs) - 1, loc=statistics.mean(diffs), scale=stats.sem(diffs))
            assert table.loc[method, f"{key}_delta_vs_baseline"] == pytest.approx(statistics.mean(diffs), abs=1e-4)
            assert (table.loc[method, f"{key}_delta_ci_low"], table.loc[method, f"{key}_delta_ci_high"]) == (
                pytest.approx(lo, abs=1e-4),
                pytest.approx(hi, abs=1e-4),
            )


def test_seeds_csv_and_the_figure(results):
    seeds = pd.read_csv(results / "seeds.csv")
    for method, runs in RUNS.items():
        for seed, r in runs.items():
            row = seeds[(seeds.method == method) & (seeds.seed == seed)].iloc[0]
            assert row.text_attack_acc == pytest.approx(100 * r[0]) and row.text_attack_success == pytest.approx(
                100 * r[1]
            )
            assert row.text_attack_queries == 20.0 + seed
    drawn = pd.read_csv(results / "text_attack.csv")
    gp = drawn[(drawn.method == "gp") & (drawn.measure == "text_attack_acc")].iloc[0]
    assert (gp.n, gp["mean"]) == (2, pytest.approx(30.5))
    assert set(drawn.measure) == {"text_attack_clean", "text_attack_acc", "text_attack_random", "text_attack_transfer"}
    assert (results / "text_attack.png").stat().st_size > 10_000
    assert not (results / "robustness.png").exists()  # no PGD in these records: no PGD figure


def test_table_md_shows_accuracy_under_the_text_attack_and_the_success_rate(results):
    md = (results / "table.md").read_text(encoding="utf-8")
    section = md[md.index("## Accuracy under the text attack") :]
    assert "budget=0.1" in section and "sources=['homophone', 'visual', 'traditional']" in section
    fgm = next(line for line in section.splitlines() if line.startswith("| fgm"))
    acc = list(column("fgm", 0).values())
    diffs = [column("fgm", 0)[s] - column("baseline", 0)[s] for s in range(3)]
    assert f"{statistics.mean(acc):.2f} ± {statistics.stdev(acc):.2f} (n=3)" in fgm
    assert f"{statistics.mean(diffs):+.2f} [" in fgm and "(3 seeds)" in fgm
    success = list(column("fgm", 1).values())
    assert f"{statistics.mean(success):.2f} ± {statistics.stdev(success):.2f} (n=3)" in fgm
