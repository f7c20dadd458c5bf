"""The pictures of ``make table``, each written with the CSV of the numbers it plots.

    accuracy.png + accuracy.csv    every seed's best dev accuracy per group, joined seed by seed
    curves.png   + curves.csv      dev accuracy by epoch per group: mean over seeds, 95% band
    sweep_<key>.png + .csv         when groups differ in exactly one numeric setting: accuracy against it

The CSVs hold exactly what is drawn (accuracies in %), so tests compare numbers, not pixels, and a
reader can replot. Only complete runs are drawn; diverged ones are counted in the labels.
Called by ``experiments.report.summary.write_all``; never imports TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.report.formatting import column_name, paired_cell, pct
from experiments.report.stats import DIVERGED, ci95, paired_differences

ROUND = 4


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def complete(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs.status != DIVERGED]


def diverged_note(n: int) -> str:
    return f" ({n} diverged, not drawn)" if n else ""


def clip_to_percent(ax) -> None:
    """Keep the y axis within 0-100 %: a t-interval of 2 seeds can reach past either end (the CSV keeps it)."""
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, 0), min(high, 100))


def save(fig, path: Path, **options) -> None:
    fig.savefig(path, dpi=120, **options)
    pyplot().close(fig)


# ---- accuracy.png: the points behind the table, joined seed by seed ----


def accuracy_data(runs: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (group, complete run): its x position, accuracy, the group's mean and 95% interval.

    Groups whose settings are equal outside ``method`` (those the Δ pairs) sit side by side and share a
    ``block``; a seed's points within a block are joined by a line. A group with no complete run has one
    row without a seed, so that it keeps its place."""
    pair = runs.drop_duplicates("settings_id").set_index("settings_id").pair
    rows = []
    for task, t in summary.groupby("task", sort=False):
        t = t.assign(pair=t.settings_id.map(pair))
        blocks = {p: i for i, p in enumerate(t.pair.unique())}
        t = t.assign(block=t.pair.map(blocks)).sort_values(["model", "block"], kind="stable")
        seeds = sorted(complete(runs[runs.task == task]).seed.unique())
        offset = dict(zip(seeds, np.linspace(-0.15, 0.15, len(seeds)) if len(seeds) > 1 else [0.0]))
        for x, s in enumerate(t.itertuples()):
            acc = complete(runs[runs.settings_id == s.settings_id]).set_index("seed").best_dev_acc
            lo, hi = ci95(acc)
            group = {
                "task": task,
                "model": s.model,
                "method": s.method,
                "label": s.label,
                "settings_id": s.settings_id,
                "block": s.block,
                "group_x": x,
            }
            stats = {"mean": s.mean, "ci_low": lo, "ci_high": hi, "n": s.n, "n_diverged": s.n_diverged, "blog": s.blog}
            for seed, a in acc.items() if len(acc) else [(None, np.nan)]:
                rows.append({**group, "seed": seed, "x": x + offset.get(seed, 0.0), "best_dev_acc": a, **stats})
    return pd.DataFrame(rows).astype({"seed": "Int64"})


def plot_accuracy(data: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    several = data.model.nunique() > 1
    groups = data.drop_duplicates(["task", "group_x"])
    ticks = {
        (g.task, g.group_x): (
            column_name(g, several).replace(" (", "\n").replace(", ", "\n").rstrip(")")
            + ("" if not g.n_diverged else f"\n{g.n_diverged} diverged")
        )
        for g in groups.itertuples()
    }
    width = max(1.0, 0.075 * max(len(line) for t in ticks.values() for line in t.split("\n")))  # inches per group
    tasks = list(data.task.unique())
    widths = [max(3.0, width * (groups.task == t).sum()) for t in tasks]
    fig, axes = plt.subplots(
        1, len(tasks), figsize=(sum(widths) + 1, 5), squeeze=False, gridspec_kw={"width_ratios": widths}
    )
    colors = {m: f"C{i}" for i, m in enumerate(data.method.unique())}
    for ax, task in zip(axes[0], tasks):
        t = data[data.task == task]
        for _, line in t.dropna(subset=["seed"]).groupby(["block", "seed"]):
            if len(line) > 1:
                ax.plot(line.x, line.best_dev_acc, "-", color="grey", alpha=0.35, lw=0.8, label="same seed")
        for g in t.drop_duplicates("group_x").itertuples():
            points = t[t.group_x == g.group_x]
            ax.plot(points.x, points.best_dev_acc, "o", color=colors[g.method], alpha=0.7, label="one seed")
            err = None if pd.isna(g.ci_low) else [[g.mean - g.ci_low], [g.ci_high - g.mean]]
            ax.errorbar(
                g.group_x,
                g.mean,
                yerr=err,
                fmt="_",
                color="black",
                markersize=24,
                capsize=6,
                lw=1.5,
                label="mean, 95% interval",
            )
            if not pd.isna(g.blog):
                ax.plot(g.group_x + 0.3, g.blog, "*", color="red", markersize=12, label="blog's figure (CLUE test)")
        n = t.group_x.nunique()
        ax.set_xticks(range(n), [ticks[task, x] for x in range(n)], fontsize=7)
        ax.set_xlim(-0.6, n - 0.4)
        ax.set_title(f"{task.upper()} ({', '.join(t.model.unique())})")
        ax.grid(axis="y", alpha=0.3)
        clip_to_percent(ax)
    axes[0][0].set_ylabel("best dev accuracy (%)")
    figure_legend(fig, axes[0], {"one seed": plt.Line2D([], [], marker="o", ls="", color="grey", alpha=0.7)})
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    save(fig, path)


def figure_legend(fig, axes, first: dict) -> None:
    """One legend above the panels, each label once."""
    legend = dict(first)
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="upper center", ncol=len(legend), fontsize=8, frameon=False)


# ---- curves.png: dev accuracy by epoch ----


def curves_data(runs: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per group and epoch: over the complete runs that reached that epoch, n, mean and 95% t-interval.
    A group without any (all its runs diverged) has one row without an epoch, so that its legend says so."""
    rows = []
    for s in summary.itertuples():
        per_epoch = {}
        for history in complete(runs[runs.settings_id == s.settings_id]).history:
            for epoch, acc in history:
                per_epoch.setdefault(epoch, []).append(acc)
        group = {"task": s.task, "model": s.model, "method": s.method, "label": s.label, "settings_id": s.settings_id}
        for epoch in sorted(per_epoch):
            lo, hi = ci95(per_epoch[epoch])
            rows.append(
                {
                    **group,
                    "epoch": epoch,
                    "n": len(per_epoch[epoch]),
                    "mean": np.mean(per_epoch[epoch]),
                    "ci_low": lo,
                    "ci_high": hi,
                    "n_diverged": s.n_diverged,
                }
            )
        if not per_epoch:
            rows.append({**group, "epoch": None, "n": 0, "n_diverged": s.n_diverged})
    columns = [
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
    return pd.DataFrame(rows, columns=columns).astype({"epoch": "Int64"})


def plot_curves(data: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    tasks = list(data.task.unique()) or ["(no task)"]
    several = data.model.nunique() > 1
    fig, axes = plt.subplots(1, len(tasks), figsize=(9.5 * len(tasks), 4.8), squeeze=False)
    if data.empty:
        axes[0][0].text(0.5, 0.5, "no per-epoch history in the records", ha="center", transform=axes[0][0].transAxes)
    for ax, task in zip(axes[0], tasks):
        for i, (_, c) in enumerate(data[data.task == task].groupby("settings_id", sort=False)):
            color = f"C{i % 10}"
            label = column_name(c.iloc[0], several) + diverged_note(c.n_diverged.iloc[0])
            c = c.dropna(subset=["epoch"]).astype({"epoch": float})
            ax.plot(c.epoch, c["mean"], "o-", color=color, ms=3, label=label)
            ax.fill_between(c.epoch, c.ci_low.astype(float), c.ci_high.astype(float), color=color, alpha=0.12, lw=0)
        ax.set_title(f"{task.upper()}: dev accuracy by epoch (mean over seeds, 95% band)", fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        clip_to_percent(ax)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    axes[0][0].set_ylabel("dev accuracy (%)")
    fig.subplots_adjust(wspace=0.6)
    save(fig, path, bbox_inches="tight")  # the figure grows to hold the legends beside the panels, however long


# ---- sweep_<key>.png: accuracy against the one numeric setting that varies ----


def is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def sweep_key(runs: pd.DataFrame, keys: list[str]) -> str | None:
    """The setting swept, if groups differ in exactly one setting and it takes two or more numeric values."""
    if len(keys) != 1:
        return None
    values = [v for v in runs[keys[0]] if v is not None and not (isinstance(v, float) and np.isnan(v))]
    return keys[0] if values and all(map(is_number, values)) and len(set(values)) > 1 else None


def sweep_data(runs: pd.DataFrame, summary: pd.DataFrame, key: str) -> pd.DataFrame:
    """One row per group: its value of ``key`` (empty: a band, e.g. the baseline, which has no ε), the mean
    accuracy with its 95% interval, and the paired Δ to the baseline from the summary."""
    rows = []
    for s in summary.itertuples():
        lo, hi = ci95(complete(runs[runs.settings_id == s.settings_id]).best_dev_acc)
        rows.append(
            {
                "task": s.task,
                "model": s.model,
                "method": s.method,
                key: summary.at[s.Index, key],
                "n": s.n,
                "n_diverged": s.n_diverged,
                "mean": s.mean,
                "ci_low": lo,
                "ci_high": hi,
                "delta_vs_baseline": s.delta_vs_baseline,
                "delta_ci_low": s.delta_ci_low,
                "delta_ci_high": s.delta_ci_high,
                "n_paired": s.n_paired,
                "settings_id": s.settings_id,
            }
        )
    return pd.DataFrame(rows)


def plot_sweep(data: pd.DataFrame, key: str, path: Path) -> None:
    plt = pyplot()
    panels = list(data.groupby(["task", "model"], sort=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    values = data[key].dropna().astype(float)
    log = (values > 0).all() and values.max() / values.min() >= 10
    colors = {m: f"C{i}" for i, m in enumerate(data.method.unique())}
    for ax, ((task, model), p) in zip(axes[0], panels):
        for row, (method, m) in enumerate(p.groupby("method", sort=False)):
            swept, bands = m[m[key].notna()].sort_values(key), m[m[key].isna()]
            for b in bands.itertuples():  # a group without the setting (the baseline): mean and interval as a band
                label = f"{method} (no {key}): mean, 95% band" + diverged_note(b.n_diverged)
                ax.axhline(b.mean, color=colors[method], lw=1, label=label)
                if not pd.isna(b.ci_low):
                    ax.axhspan(b.ci_low, b.ci_high, color=colors[method], alpha=0.15, lw=0)
            if len(swept):
                err = np.array([swept["mean"] - swept.ci_low, swept.ci_high - swept["mean"]])
                ax.errorbar(
                    swept[key].astype(float),
                    swept["mean"],
                    yerr=np.nan_to_num(err),
                    fmt="o-",
                    color=colors[method],
                    capsize=4,
                    label=method,
                )
                for value, n in zip(swept[key], swept.n_diverged):
                    if n:
                        ax.annotate(
                            f"{method}: {n} diverged",
                            (float(value), 0.02 + 0.05 * row),
                            xycoords=("data", "axes fraction"),
                            fontsize=7,
                            ha="center",
                            color=colors[method],
                        )
        if log:
            ax.set_xscale("log")
        ax.set_xticks(sorted(set(values)), [f"{v:g}" for v in sorted(set(values))])
        ax.minorticks_off()
        ax.set_title(f"{task.upper()} ({model}): best dev accuracy, mean and 95% interval", fontsize=10)
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
        clip_to_percent(ax)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("best dev accuracy (%)")
    fig.tight_layout()
    save(fig, path)


def best_values(runs: pd.DataFrame, data: pd.DataFrame, key: str) -> pd.DataFrame:
    """Per task, model and method swept over two or more values: the value with the highest mean accuracy,
    its paired Δ to the baseline, and its paired difference to the runner-up (over their shared seeds)."""
    rows = []
    for (task, model, method), m in data[data[key].notna() & (data.n > 0)].groupby(
        ["task", "model", "method"], sort=False
    ):
        if len(m) < 2:
            continue
        best, second = m.sort_values("mean", ascending=False, kind="stable").iloc[:2].itertuples()
        diffs = paired_differences(
            complete(runs[runs.settings_id == best.settings_id]).set_index("seed").best_dev_acc,
            runs[runs.settings_id == second.settings_id],
        )
        lo, hi = ci95(diffs)
        rows.append(
            {
                "task": task,
                "model": model,
                "method": method,
                "best": data.at[best.Index, key],
                "mean": best.mean,
                "n": best.n,
                "delta_vs_baseline": best.delta_vs_baseline,
                "delta_ci_low": best.delta_ci_low,
                "delta_ci_high": best.delta_ci_high,
                "n_paired": best.n_paired,
                "runner_up": data.at[second.Index, key],
                "delta_vs_runner_up": diffs.mean() if len(diffs) else np.nan,
                "runner_up_ci_low": lo,
                "runner_up_ci_high": hi,
                "n_paired_runner_up": len(diffs),
            }
        )
    return pd.DataFrame(rows)


def sweep_markdown(best: pd.DataFrame, key: str) -> str:
    lines = [
        f"## Sweep over `{key}` (`sweep_{key}.png`, numbers in `sweep_{key}.csv`)",
        "",
        f"Best value of `{key}` by mean best dev accuracy; Δ paired over shared seeds, 95% t-interval in brackets.",
        "",
    ]
    for b in best.itertuples():
        vs_base = (
            "no baseline to pair with"
            if pd.isna(b.delta_vs_baseline) and b.n_paired == 0
            else paired_cell(b.delta_vs_baseline, b.delta_ci_low, b.delta_ci_high, b.n_paired)
        )
        lines.append(
            f"- {b.task.upper()} [{b.model}] {b.method}: best `{key}={b.best}`, {pct(b.mean)} (n={b.n}); "
            f"vs baseline {vs_base}; vs the runner-up `{key}={b.runner_up}` "
            + paired_cell(b.delta_vs_runner_up, b.runner_up_ci_low, b.runner_up_ci_high, b.n_paired_runner_up)
            + "."
        )
    if best.empty:
        lines.append("(no method has two or more values with a complete run)")
    return "\n".join(lines)


def write_pictures(
    results_dir: Path, runs: pd.DataFrame, summary: pd.DataFrame, keys: list[str]
) -> tuple[list[Path], str]:
    """Write every picture and its CSV into ``results_dir``; return their paths and table.md's sweep section."""
    out, section = [], ""
    accuracy = accuracy_data(runs, summary)
    curves = curves_data(runs, summary)
    jobs = [("accuracy", accuracy, plot_accuracy), ("curves", curves, plot_curves)]
    if (key := sweep_key(runs, keys)) is not None:
        sweep = sweep_data(runs, summary, key)
        jobs.append((f"sweep_{key}", sweep, lambda d, p: plot_sweep(d, key, p)))
        section = sweep_markdown(best_values(runs, sweep, key), key)
    for name, data, draw in jobs:
        png, csv = results_dir / f"{name}.png", results_dir / f"{name}.csv"
        draw(data, png)
        data.round(ROUND).to_csv(csv, index=False)
        out += [png, csv]
    return out, section
