"""make table: the numbers equal an independent computation from synthetic run records."""

from __future__ import annotations

import statistics
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from experiments import PROJECT_ROOT, records
from experiments.report import summary
from tests.helpers.synthetic_records import settings, write

# (task, method, changes) -> best dev accuracy (fraction) per seed
GRID = {
    ("tnews", "baseline", ()): {0: 0.5610, 1: 0.5577, 2: 0.5652, 3: 0.5599, 4: 0.5631},
    ("tnews", "fgm", ()): {0: 0.5701, 1: 0.5655, 2: 0.5690, 3: 0.5712, 4: 0.5644},
    ("tnews", "gp", ()): {0: 0.5688, 1: 0.5702, 2: 0.5660, 3: 0.5731},  # seed 4 missing
    ("tnews", "pgd", ()): {1: 0.5620, 2: 0.5671},  # methods nobody listed
    ("tnews", "freelb", ()): {0: 0.5599, 3: 0.5640, 4: 0.5601},
    ("tnews", "baseline", (("task.max_train_samples", 1000),)): {0: 0.4012, 1: 0.4120},
    ("tnews", "fgm", (("task.max_train_samples", 1000),)): {0: 0.4105, 1: 0.4150, 2: 0.4200},
    ("iflytek", "baseline", ()): {0: 0.6011, 1: 0.5978, 2: 0.6040},
    ("iflytek", "fgm", ()): {0: 0.6140, 1: 0.6102, 2: 0.6166},
    ("iflytek", "fgm", (("method.epsilon", 0.05),)): {0: 0.6050, 1: 0.6001},
    ("iflytek", "gp", (("trainer.learning_rate", 3e-5),)): {0: 0.6123, 1: 0.6111},  # no baseline at this lr
}
BLOG = {
    ("tnews", "baseline"): 56.58,
    ("tnews", "fgm"): 57.66,
    ("tnews", "gp"): 57.81,
    ("iflytek", "baseline"): 60.29,
    ("iflytek", "fgm"): 62.46,
    ("iflytek", "gp"): 62.31,
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    for (task, method, changes), accs in GRID.items():
        for seed, acc in accs.items():
            write(results, task, method, seed, acc, **dict(changes))
    # Not complete: a run still going, a half-written file, a temporary file of the atomic write.
    write(results, "tnews", "baseline", 9, 0.99, status="running")
    (results / "runs" / "tnews_bert_base_fgm_seed9_0123456789.json").write_text('{"status": "complete", "ta')
    (results / "runs" / ".tnews_bert_base_gp_seed9_x.json.abc.tmp").write_text("{}")
    summary.write_all(results)
    return results


def expected(task, method, changes=()):
    """n, mean, std, paired delta, its interval and the blog figure, computed here from GRID."""
    accs = {s: 100 * a for s, a in GRID[task, method, changes].items()}
    out = {"n": len(accs), "mean": statistics.mean(accs.values()), "std": statistics.stdev(accs.values())}
    same_outside_method = tuple(c for c in changes if not c[0].startswith("method."))
    base = {s: 100 * a for s, a in GRID.get((task, "baseline", same_outside_method), {}).items()}
    diffs = [accs[s] - base[s] for s in sorted(accs.keys() & base.keys())] if method != "baseline" else []
    out["n_paired"] = len(diffs)
    if len(diffs) >= 2:
        d = statistics.mean(diffs)
        half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
        out.update(delta_vs_baseline=d, delta_ci_low=d - half, delta_ci_high=d + half)
    out["blog"] = BLOG.get((task, method), np.nan)
    return out


def test_summary_equals_an_independent_computation(results):
    summary = pd.read_csv(results / "summary.csv")
    assert list(summary.columns[:10]) == [
        "task",
        "model",
        "method",
        "n",
        "mean",
        "std",
        "delta_vs_baseline",
        "delta_ci_low",
        "delta_ci_high",
        "blog",
    ]
    assert len(summary) == len(GRID)
    for task, method, changes in GRID:
        rows = summary[summary.settings_id == records.settings_id(settings(task, method, 0, **dict(changes)))]
        assert len(rows) == 1 and (rows.task.iloc[0], rows.method.iloc[0]) == (task, method)
        row, want = rows.iloc[0], expected(task, method, changes)
        for key, value in want.items():
            assert row[key] == pytest.approx(value, abs=1e-4, nan_ok=True), (task, method, changes, key)
        for key in ("delta_vs_baseline", "delta_ci_low", "delta_ci_high"):
            if key not in want:
                assert pd.isna(row[key]), (task, method, changes, key)


def test_a_worked_example(results):
    summary = pd.read_csv(results / "summary.csv").set_index(["task", "method"])
    fgm = summary.loc[("tnews", "fgm")]
    fgm = fgm[fgm["task.max_train_samples"].isna()].iloc[0]
    # fgm - baseline, seeds 0..4: 0.91 0.78 0.38 1.13 0.13 -> mean 0.666, sd 0.4052, t(4) 2.7764
    assert (fgm.n, fgm.n_paired) == (5, 5)
    assert fgm.delta_vs_baseline == pytest.approx(0.666, abs=1e-4)
    assert (fgm.delta_ci_low, fgm.delta_ci_high) == pytest.approx((0.1629, 1.1691), abs=1e-4)
    gp = summary.loc[[("tnews", "gp")]].iloc[0]
    assert (gp.n, gp.n_paired) == (4, 4)  # paired over the 4 shared seeds only


def test_different_settings_are_kept_apart_and_labelled(results):
    summary = pd.read_csv(results / "summary.csv")
    # Only the keys that vary within a task and model (or within a method) label rows.
    assert list(summary.columns[12:]) == [
        "n_paired",
        "n_diverged",
        "method.epsilon",
        "task.max_train_samples",
        "trainer.learning_rate",
        "settings_id",
    ]
    fgm_iflytek = summary[(summary.task == "iflytek") & (summary.method == "fgm")]
    assert sorted(fgm_iflytek["method.epsilon"]) == [0.05, 0.5] and sorted(fgm_iflytek.n) == [2, 3]
    small = summary[summary["task.max_train_samples"] == 1000].set_index("method")
    # Paired with the baseline of the same data size, over their two shared seeds.
    assert small.loc["fgm", "n_paired"] == 2
    assert small.loc["fgm", "delta_vs_baseline"] == pytest.approx((0.93 + 0.30) / 2, abs=1e-4)
    assert ",,1000,2e-05," in (results / "summary.csv").read_text()  # an int setting stays an int
    md = (results / "table.md").read_text()
    assert "| fgm (method.epsilon=0.05, task.max_train_samples=None, trainer.learning_rate=2e-05) |" in md
    assert "gp (method.epsilon=1.0, task.max_train_samples=None, trainer.learning_rate=3e-05)" in md
    assert "no baseline run with these settings" in md


def test_methods_in_order_and_incomplete_records_ignored(results):
    summary = pd.read_csv(results / "summary.csv")
    tnews = summary[(summary.task == "tnews") & summary["task.max_train_samples"].isna()]
    assert list(tnews.method) == ["baseline", "fgm", "gp", "freelb", "pgd"]
    assert list(summary.task.unique()) == ["tnews", "iflytek"]  # CLUE's order (summary.TASKS)
    seeds = pd.read_csv(results / "seeds.csv")
    assert len(seeds) == sum(len(accs) for accs in GRID.values())
    assert 9 not in set(seeds.seed) and seeds.best_dev_acc.max() < 99
    assert list(seeds.columns) == [
        "task",
        "model",
        "method",
        "seed",
        "status",
        "best_dev_acc",
        "final_dev_acc",
        "diverged_at_epoch",
        "diverged_at_step",
        "stopped_at_epoch",
        "method.epsilon",
        "task.max_train_samples",
        "trainer.learning_rate",
        "settings_id",
    ]
    assert (results / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_exact_files_for_a_small_sweep(tmp_path):
    for seed, (b, f) in enumerate([(0.5, 0.53), (0.52, 0.56)]):
        write(tmp_path, "tnews", "baseline", seed, b, final=b)
        write(tmp_path, "tnews", "fgm", seed, f, final=f)
    summary.write_all(tmp_path)
    sid = {m: records.settings_id(settings("tnews", m, 0)) for m in ("baseline", "fgm")}
    assert (tmp_path / "seeds.csv").read_text() == (
        "task,model,method,seed,status,best_dev_acc,final_dev_acc,diverged_at_epoch,diverged_at_step,"
        "stopped_at_epoch,settings_id\n"
        f"tnews,bert_base,baseline,0,complete,50.0,50.0,,,,{sid['baseline']}\n"
        f"tnews,bert_base,baseline,1,complete,52.0,52.0,,,,{sid['baseline']}\n"
        f"tnews,bert_base,fgm,0,complete,53.0,53.0,,,,{sid['fgm']}\n"
        f"tnews,bert_base,fgm,1,complete,56.0,56.0,,,,{sid['fgm']}\n"
    )
    # fgm - baseline = 3, 4: mean 3.5, sd 0.7071, t(1) 12.7062 * 0.5 = 6.3531
    assert (tmp_path / "summary.csv").read_text() == (
        "task,model,method,n,mean,std,delta_vs_baseline,delta_ci_low,delta_ci_high,blog,clue_test,clue_dev,n_paired,"
        "n_diverged,settings_id\n"
        f"tnews,bert_base,baseline,2,51.0,1.4142,,,,56.58,56.58,56.09,0,0,{sid['baseline']}\n"
        f"tnews,bert_base,fgm,2,54.5,2.1213,3.5,-2.8531,9.8531,57.66,,,2,0,{sid['fgm']}\n"
    )
    md = (tmp_path / "table.md").read_text()
    assert md.startswith("# Results: baseline vs adversarial training\n\nMetric: **best dev accuracy over epochs**")
    assert "CLUE **test-set** numbers" in md and "from 4 complete run records" in md
    assert md.endswith(
        "## TNEWS: best dev accuracy per seed (bert_base)\n\n"
        "| seed | baseline | fgm |\n|---|---|---|\n| 0 | 50.00 | 53.00 |\n| 1 | 52.00 | 56.00 |\n\n"
        "## Summary: mean ± std (n seeds), paired difference to the baseline, the blog's figure\n\n"
        "| method | TNEWS | TNEWS Δ vs baseline | TNEWS blog | TNEWS CLUE test (dev) |\n|---|---|---|---|---|\n"
        "| baseline | 51.00 ± 1.41 (n=2) |  | 56.58 | 56.58 (56.09) |\n"
        "| fgm | 54.50 ± 2.12 (n=2) | +3.50 [-2.85, +9.85] (2 seeds) | 57.66 |  |\n"
    )


def test_blog_figures_are_data():
    blog = pd.read_csv(summary.BLOG_CSV, comment="#")
    assert {(r.task, r.model, r.method): r.accuracy for r in blog.itertuples()} == {
        (t, "bert_base", m): v for (t, m), v in BLOG.items()
    }
    assert "kexue.fm/archives/7234" in summary.BLOG_CSV.read_text()


def test_clue_figures_are_data_and_order_the_task_columns(tmp_path):
    clue = pd.read_csv(summary.CLUE_CSV, comment="#")
    bert = clue[clue.model == "bert_base"]  # the other models' rows: tests/test_model_family.py
    assert {r.task: (r.test, r.dev) for r in bert.itertuples()} == {
        "afqmc": (73.70, 74.16),
        "tnews": (56.58, 56.09),
        "iflytek": (60.29, 60.37),
        "cmnli": (79.69, 79.47),
        "ocnli": (72.2, 74.5),
        "cluewsc2020": (62.0, 59.6),
        "csl": (80.36, 79.63),
    }
    assert tuple(bert.task) == summary.TASKS and set(clue.method) == {"baseline"}
    text = summary.CLUE_CSV.read_text()
    assert "github.com/CLUEbenchmark/CLUE" in text and "github.com/CLUEbenchmark/OCNLI" in text
    for task in ("csl", "ocnli", "tnews", "afqmc", "iflytek", "cluewsc2020", "cmnli"):  # written out of order
        for seed in (0, 1):
            write(tmp_path, task, "baseline", seed, 0.5 + seed / 100, final=0.5)
    summary.write_all(tmp_path)
    header = [line for line in (tmp_path / "table.md").read_text().splitlines() if line.startswith("| method |")][0]
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert [c for c in columns if " " not in c and c != "method"] == [t.upper() for t in summary.TASKS]
    assert columns[columns.index("OCNLI") + 3] == "OCNLI CLUE test (dev)"
    assert "| baseline | 50.50 ± 0.71 (n=2) |  |  | 73.70 (74.16) |" in (tmp_path / "table.md").read_text()


@pytest.mark.slow
def test_table_never_imports_tensorflow(results):
    code = (
        "import sys, experiments.commands.table as t; t.main([sys.argv[1]]); "
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'tf_keras', 'bert4keras'}); "
        "assert not bad, bad"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(results)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        str(results / n)
        for n in ("table.md", "summary.csv", "seeds.csv", "accuracy.png", "accuracy.csv", "curves.png", "curves.csv")
    ]


@pytest.mark.slow
def test_no_records_is_a_one_line_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "experiments.commands.table", str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: no complete run records in {tmp_path / 'runs'}: run `make sweep` first"
