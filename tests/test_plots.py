"""make table's pictures and diverged runs: the numbers behind each picture equal an independent
computation from synthetic run records (the format experiments/commands/run.py writes), no TensorFlow."""

from __future__ import annotations

import copy
import statistics

import pandas as pd
import pytest
from scipy import stats

from experiments import records
from experiments.report import plots, summary
from tests.helpers.synthetic_records import settings

PNG = b"\x89PNG\r\n\x1a\n"
KEY = "method.epsilon"
SEEDS = (0, 1, 2)
# (method, epsilon) -> seed -> dev accuracy (fraction) per epoch; epsilon None: the baseline, which has none.
HISTORIES = {
    ("baseline", None): {0: [0.40, 0.45, 0.47], 1: [0.41, 0.44, 0.46], 2: [0.39, 0.46, 0.45]},
    ("fgm", 0.01): {0: [0.41, 0.46, 0.48], 1: [0.40, 0.45, 0.47], 2: [0.40, 0.47, 0.47]},
    ("fgm", 0.05): {0: [0.42, 0.48, 0.50], 1: [0.43, 0.47, 0.49], 2: [0.41, 0.48, 0.51]},
    ("fgm", 0.2): {0: [0.38, 0.44, 0.49], 1: [0.37, 0.45, 0.48], 2: [0.30]},
    ("gp", 0.01): {0: [0.40, 0.45, 0.46], 1: [0.42, 0.45, 0.47], 2: [0.40, 0.44]},
    ("gp", 0.05): {0: [0.41, 0.47, 0.48], 1: [0.41, 0.46, 0.47], 2: [0.42, 0.46, 0.49]},
    ("gp", 0.2): {0: [0.20], 1: [], 2: [0.21]},
}
DIVERGED = {("fgm", 0.2, 2): (2, 37), ("gp", 0.2, 0): (2, 11), ("gp", 0.2, 1): (1, 5), ("gp", 0.2, 2): (2, 40)}
STOPPED_EARLY = {("gp", 0.01, 2): 2}  # patience ran out after epoch 2: a complete run, averaged as any other


def record(method, eps, seed):
    """A run record as experiments/commands/run.py writes it (complete, stopped early, or diverged)."""
    s = settings("tnews", method, seed, model="tiny", **({KEY: eps} if eps is not None else {}))
    accs = HISTORIES[method, eps][seed]
    history = [{"epoch": e + 1, "dev_acc": a, "train_loss": 1.0 / (e + 1), "seconds": 1.0} for e, a in enumerate(accs)]
    rec = {
        "status": "complete",
        "task": "tnews",
        "model": "tiny",
        "method": method,
        "seed": seed,
        "settings_id": records.settings_id(s),
        "history": history,
        "settings": copy.deepcopy(s),
        "config": s,
    }
    if (method, eps, seed) in DIVERGED:
        epoch, step = DIVERGED[method, eps, seed]
        rec.update(status="diverged", diverged_at={"epoch": epoch, "step": step})
    else:
        best = max(history, key=lambda h: h["dev_acc"])
        rec.update(best_dev_acc=best["dev_acc"], best_epoch=best["epoch"], final_dev_acc=accs[-1])
    if (method, eps, seed) in STOPPED_EARLY:
        rec.update(stopped_early=True, stopped_at_epoch=STOPPED_EARLY[method, eps, seed])
    return rec


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    results = tmp_path_factory.mktemp("sweep")
    for (method, eps), seeds in HISTORIES.items():
        for seed in seeds:
            rec = record(method, eps, seed)
            records.write_json_atomic(records.record_path(results, rec["config"]), rec)
    summary.write_all(results)
    return results


def completes(method, eps):
    return {seed: accs for seed, accs in HISTORIES[method, eps].items() if (method, eps, seed) not in DIVERGED}


def best(method, eps):
    return {seed: 100 * max(accs) for seed, accs in completes(method, eps).items()}


def t_interval(values):
    """mean ± t(0.975, n-1) * sd / sqrt(n), written out here rather than taken from stats.ci95."""
    m = statistics.mean(values)
    if len(values) < 2:
        return m, float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return m, m - half, m + half


def group_rows(df, method, eps):
    rows = df[df.method == method]
    return rows[rows[KEY].isna()] if eps is None else rows[rows[KEY] == eps]


def test_diverged_runs_are_counted_and_listed_not_averaged(results):
    summary = pd.read_csv(results / "summary.csv")
    for method, eps in HISTORIES:
        [row] = group_rows(summary, method, eps).itertuples()
        want = best(method, eps)
        assert (row.n, row.n_diverged) == (len(want), sum(k[:2] == (method, eps) for k in DIVERGED))
        assert row.mean == pytest.approx(
            statistics.mean(want.values()) if want else float("nan"), abs=1e-4, nan_ok=True
        )
    seeds = pd.read_csv(results / "seeds.csv")
    assert len(seeds) == sum(map(len, HISTORIES.values()))
    listed = seeds[seeds.status == "diverged"]
    assert {
        (r.method, r[KEY], r.seed): (r.diverged_at_epoch, r.diverged_at_step) for _, r in listed.iterrows()
    } == DIVERGED
    assert listed.best_dev_acc.isna().all() and listed.final_dev_acc.isna().all()
    [stopped] = seeds[seeds.stopped_at_epoch.notna()].itertuples()
    assert (stopped.method, stopped.seed, stopped.stopped_at_epoch, stopped.status) == ("gp", 2, 2, "complete")
    assert stopped.best_dev_acc == pytest.approx(44.0)
    md = (results / "table.md").read_text()
    assert "from 17 complete run records in `runs/` and 4 diverged ones (counted and listed, never averaged)" in md
    assert (
        "| 2 | 46.00 | 47.00 | 51.00 | diverged (epoch 2, step 37) | 44.00 (stopped early, epoch 2) | 49.00 "
        "| diverged (epoch 2, step 40) |"
    ) in md
    assert "| fgm (method.epsilon=0.2) | 48.50 ± 0.71 (n=2, 1 diverged) |" in md
    assert "| gp (method.epsilon=0.2) | – (n=0, 3 diverged) | no complete run |" in md


def test_curves_equal_the_histories(results):
    curves = pd.read_csv(results / "curves.csv")
    assert list(curves.columns) == [
        "task",
        "model",
        "method",
        "label",
        "settings_id",
        "epoch",
        "n",
        "mean",
        "ci_low",
        "ci_high",
        "n_diverged",
    ]
    want = {}
    for method, eps in HISTORIES:
        for epoch in range(1, 4):
            reached = [100 * accs[epoch - 1] for accs in completes(method, eps).values() if len(accs) >= epoch]
            if reached:
                want[method, eps, epoch] = (len(reached), *t_interval(reached))
    got = {
        (r.method, None if pd.isna(r.label) else float(r.label.split("=")[1]), r.epoch): (
            r.n,
            r.mean,
            r.ci_low,
            r.ci_high,
        )
        for r in curves.dropna(subset=["epoch"]).itertuples()
    }
    assert got.keys() == want.keys()
    # The group whose runs all diverged has no curve, but a row (no epoch) that names it in the legend.
    assert curves[curves.epoch.isna()][["method", "label", "n", "n_diverged"]].values.tolist() == [
        ["gp", "method.epsilon=0.2", 0, 3]
    ]
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-4, nan_ok=True), k
    assert got["gp", 0.01, 3][0] == 2  # the run that stopped early has no epoch 3
    assert (results / "curves.png").read_bytes()[:8] == PNG


def test_accuracy_points_are_the_runs_joined_by_seed(results):
    acc = pd.read_csv(results / "accuracy.csv")
    assert (results / "accuracy.png").read_bytes()[:8] == PNG
    points = acc.dropna(subset=["seed"])
    want = {(m, e, s): a for (m, e) in HISTORIES for s, a in best(m, e).items()}
    got = {
        (r.method, None if pd.isna(r.label) else float(r.label.split("=")[1]), r.seed): r.best_dev_acc
        for r in points.itertuples()
    }
    assert got == pytest.approx(want, abs=1e-4)
    # All groups differ only in `method`: one block, so each seed's points are joined across all of them,
    # in the table's order; the group without a complete run keeps its place (one row, no seed).
    assert acc.block.nunique() == 1
    assert list(acc.drop_duplicates("group_x").method) == ["baseline"] + ["fgm"] * 3 + ["gp"] * 3
    assert list(acc.drop_duplicates("group_x").label.fillna("")) == [
        "",
        "method.epsilon=0.01",
        "method.epsilon=0.05",
        "method.epsilon=0.2",
        "method.epsilon=0.01",
        "method.epsilon=0.05",
        "method.epsilon=0.2",
    ]
    assert acc[acc.seed.isna()][["method", "n", "n_diverged"]].values.tolist() == [["gp", 0, 3]]
    for (_, seed), line in points.groupby(["block", "seed"]):
        assert list(line.x) == sorted(line.x)
        assert len(line) == sum(seed in best(m, e) for m, e in HISTORIES)
    fgm = points[(points.method == "fgm") & (points.label == "method.epsilon=0.05")]
    m, lo, hi = t_interval(list(best("fgm", 0.05).values()))
    assert (fgm["mean"].iloc[0], fgm.ci_low.iloc[0], fgm.ci_high.iloc[0]) == pytest.approx((m, lo, hi), abs=1e-4)


def test_sweep_picks_the_key_and_the_best_value_with_its_paired_delta(results):
    assert sorted(p.name for p in results.glob("sweep_*")) == ["sweep_method.epsilon.csv", "sweep_method.epsilon.png"]
    sweep = pd.read_csv(results / "sweep_method.epsilon.csv")
    for method, eps in HISTORIES:
        [row] = group_rows(sweep, method, eps).itertuples()
        values = list(best(method, eps).values())
        if len(values) >= 2:
            assert (row.mean, row.ci_low, row.ci_high) == pytest.approx(t_interval(values), abs=1e-4)
    base = best("baseline", None)
    md = (results / "table.md").read_text()
    for method, top, runner_up in (("fgm", 0.05, 0.2), ("gp", 0.05, 0.01)):
        means = {e: statistics.mean(best(method, e).values()) for e in (0.01, 0.05, 0.2) if best(method, e)}
        assert max(means, key=means.get) == top and sorted(means.values())[-2] == means[runner_up]
        vs_base = [best(method, top)[s] - base[s] for s in sorted(best(method, top).keys() & base.keys())]
        vs_next = [
            best(method, top)[s] - best(method, runner_up)[s]
            for s in sorted(best(method, top).keys() & best(method, runner_up).keys())
        ]

        def text(d):
            m, lo, hi = t_interval(d)
            return f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}] ({len(d)} seeds)"

        assert (
            f"- TNEWS [tiny] {method}: best `method.epsilon={top}`, {means[top]:.2f} (n={len(best(method, top))}); "
            f"vs baseline {text(vs_base)}; vs the runner-up `method.epsilon={runner_up}` {text(vs_next)}."
        ) in md


def test_sweep_key_needs_exactly_one_numeric_setting():
    def runs(**columns):
        return pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in columns.items()})

    assert plots.sweep_key(runs(**{KEY: [None, 0.1, 0.5]}), [KEY]) == KEY
    assert plots.sweep_key(runs(**{"trainer.epochs": [2, 3]}), ["trainer.epochs"]) == "trainer.epochs"
    assert plots.sweep_key(runs(**{KEY: [0.1, 0.5], "trainer.epochs": [2, 3]}), [KEY, "trainer.epochs"]) is None
    assert plots.sweep_key(runs(**{"method.accumulate_clean": [True, False]}), ["method.accumulate_clean"]) is None
    assert plots.sweep_key(runs(**{"model.name": ["a", "b"]}), ["model.name"]) is None
    assert plots.sweep_key(runs(**{"task.max_train_samples": [None, 1000]}), ["task.max_train_samples"]) is None
