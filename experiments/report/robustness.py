"""Accuracy under attack in ``make table``: the records' ``robust_dev_acc`` (experiments/train/embedding_attack.py,
docs/attack.md) per eps, beside the clean accuracy; and the text attack's ``text_attack`` and
``text_attack_transfer`` (experiments/train/text_attack.py).

    summary.csv    robust_<eps>_n, _mean, _std, _delta_vs_baseline, _delta_ci_low, _delta_ci_high; the same
                   for text_attack_<x>: clean, acc (under the attack), success, random, transfer, changed, queries
    seeds.csv      robust_<eps>, text_attack_<x>: each run's values
    table.md       a section per task: mean ± std (n) per eps and the paired Δ vs baseline, 95 % t-interval;
                   a section for the text attack: accuracy under it and success rate with their paired Δ,
                   the random baseline, the transfer set, the share of characters changed, queries
    robustness.png + robustness.csv   accuracy against eps per group: mean and 95 % band over seeds;
                   eps = 0 is the clean accuracy of the attacked examples (``attack.clean_dev_acc``)
    text_attack.png + text_attack.csv   per group: clean accuracy, accuracy under the text attack, under
                   random substitutions and on the transfer set, mean and 95 % interval over seeds

Only complete runs count; a record without ``robust_dev_acc`` (``text_attack``) has none (NaN). Groups and
baseline pairs are the table's (``table.summarise``): the attacks' settings are not part of the settings id,
so the sections name them and say so when the records of one table used different ones.
Never imports TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.report.formatting import column_name, md_table, mean_cell, paired_cell
from experiments.report.stats import DIVERGED, ci95, paired_differences

CLEAN = "clean"  # the key of the clean accuracy of the attacked examples in ``of_record``
SETTINGS = ("kind", "steps", "step_size_ratio", "random_start", "perturb_special_tokens", "max_samples", "weights")
STATS = ("n", "mean", "std", "delta_vs_baseline", "delta_ci_low", "delta_ci_high")
SETTINGS_KEY = "text_attack_settings"  # of_record's key of the text attack's settings (not a number)
TEXT_SETTINGS = ("kind", "importance", "sources", "budget", "max_queries", "max_samples", "seed", "weights")
# The text attack's numbers per record (``of_record``'s keys), all in % but the queries.
TEXT = {
    "text_attack_clean": "clean accuracy of the N examples",
    "text_attack_acc": "accuracy under the text attack",
    "text_attack_success": "success rate (of the correctly classified)",
    "text_attack_random": "accuracy under random substitutions (same budget)",
    "text_attack_transfer": "accuracy on texts made against another run (transfer)",
    "text_attack_changed": "share of the seen characters changed (attacked examples)",
    "text_attack_queries": "queries per attacked example",
}


def of_record(record: dict) -> dict:
    """{eps as text: accuracy in %, "clean": the attacked examples' clean accuracy in %} and the text attack's
    ``TEXT`` keys ({} without any attack)."""
    out = {}
    robust = record.get("robust_dev_acc") or {}
    if robust:
        clean = (record.get("attack") or {}).get("clean_dev_acc")
        out = {**{str(e): 100 * a for e, a in robust.items()}, CLEAN: np.nan if clean is None else 100 * clean}
    text = record.get("text_attack") or {}
    if text:
        out.update(
            {
                "text_attack_clean": 100 * text["clean_acc"],
                "text_attack_acc": 100 * text["acc"],
                "text_attack_success": 100 * text["success_rate"],
                "text_attack_random": 100 * text["random"]["acc"] if text.get("random") else np.nan,
                "text_attack_changed": 100 * text["changed_share_mean"],
                "text_attack_queries": text["queries_mean"],
                SETTINGS_KEY: {k: text.get(k) for k in TEXT_SETTINGS},
            }
        )
    transfer = record.get("text_attack_transfer") or {}
    if transfer:  # the mean over the runs whose texts it was scored on (one in a study: its seed's baseline)
        out["text_attack_transfer"] = 100 * float(np.mean([t["acc"] for t in transfer.values()]))
    return out


def epsilons(runs: pd.DataFrame) -> list[str]:
    """Every eps some record was attacked at, in increasing order (as the records spell it)."""
    keys = {k for r in runs.robust for k in r if k != CLEAN and not k.startswith("text_attack")}
    return sorted(keys, key=float)


def text_keys(runs: pd.DataFrame) -> list[str]:
    """The ``TEXT`` keys some record has, in ``TEXT``'s order."""
    have = {k for r in runs.robust for k in r}
    return [k for k in TEXT if k in have]


def column(key: str) -> str:
    """The summary/seeds column prefix of a key of ``of_record``."""
    return key if key.startswith("text_attack") else f"robust_{key}"


def values(runs: pd.DataFrame, key: str) -> pd.Series:
    return pd.Series([r.get(key, np.nan) for r in runs.robust], index=runs.index, dtype=float)


def seed_columns(runs: pd.DataFrame) -> pd.DataFrame:
    """robust_<eps> and text_attack_<x> per run (seeds.csv); NaN for a diverged run."""
    done = runs.status != DIVERGED
    return pd.DataFrame(
        {column(e): values(runs, e).where(done) for e in [*epsilons(runs), *text_keys(runs)]}, index=runs.index
    )


def summarise(runs: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per summary row (group) and eps (and text attack number): n, mean, std and the paired Δ to the group's
    baseline, with the pairing of ``table.summarise`` (same task and model, baseline, settings equal outside
    ``method``)."""
    pgd = [CLEAN, *epsilons(runs)] if epsilons(runs) else []
    rows = []
    for s in summary.itertuples():
        everyone = runs[runs.settings_id == s.settings_id]
        group = everyone[everyone.status != DIVERGED]
        base = runs[
            (runs.task == s.task)
            & (runs.model == s.model)
            & (runs.method == "baseline")
            & (runs.pair == everyone.pair.iloc[0])
        ]
        row = {}
        for e in [*pgd, *text_keys(runs)]:
            c = column(e)
            acc = values(group, e).set_axis(group.seed).dropna()
            diffs = pd.Series(dtype=float)
            if s.method != "baseline" and s.has_baseline and len(acc):
                diffs = paired_differences(acc, base.assign(best_dev_acc=values(base, e)).dropna(subset="best_dev_acc"))
            lo, hi = ci95(diffs)
            row.update(
                {
                    f"{c}_n": len(acc),
                    f"{c}_mean": acc.mean() if len(acc) else np.nan,
                    f"{c}_std": acc.std(),
                    f"{c}_delta_vs_baseline": diffs.mean() if len(diffs) else np.nan,
                    f"{c}_delta_ci_low": lo,
                    f"{c}_delta_ci_high": hi,
                    f"{c}_n_paired": len(diffs),
                }
            )
        rows.append(row)
    return pd.DataFrame(rows, index=summary.index)


def cells(s: pd.Series, e: str, method: str) -> tuple[str, str]:
    """'mean ± std (n)' and 'Δ [interval] (pairs)' of one group at one eps (or text attack number)."""
    c = column(e)
    n = int(s[f"{c}_n"])
    if not n:
        return "", ""
    mean = mean_cell(s[f"{c}_mean"], s[f"{c}_std"], n)
    pairs = int(s[f"{c}_n_paired"])
    if method == "baseline" or not pairs:
        return mean, "" if method == "baseline" else "no baseline run attacked so"
    return mean, paired_cell(s[f"{c}_delta_vs_baseline"], s[f"{c}_delta_ci_low"], s[f"{c}_delta_ci_high"], pairs)


def attack_settings(runs: pd.DataFrame) -> list[dict]:
    """The distinct attack settings of the attacked runs (each as the ``SETTINGS`` keys of its record's ``attack``)."""
    seen = []
    for robust, attack in zip(runs.robust, runs.attack):
        a = {k: attack.get(k) for k in SETTINGS}
        if CLEAN in robust and a not in seen:
            seen.append(a)
    return seen


def markdown(
    runs: pd.DataFrame, summary: pd.DataFrame, robust: pd.DataFrame, settings: list[dict], radii: pd.DataFrame
) -> str:
    several = runs.model.nunique() > 1
    eps = epsilons(runs)
    described = "; ".join(", ".join(f"{k}={v}" for k, v in s.items()) for s in settings)
    parts = [
        "## Accuracy under attack: mean ± std (n seeds), paired difference to the baseline "
        "(`robustness.png`, numbers in `robustness.csv`)",
        "White-box PGD on the looked-up token embeddings, l2 ball per example of absolute radius "
        "eps × mean token-embedding norm × √(perturbed tokens) (docs/attack.md); an example counts when the "
        "model is right at every point the attack visited. Dev accuracy in % of the attacked examples; "
        f'"clean" is their accuracy without attack. Attack settings: {described}.' + mixed(settings),
    ]
    table = summary.assign(row=[column_name(r, several) for r in summary.itertuples()])
    for task, t in table.groupby("task", sort=False):
        rows = []
        for i in t.index:
            s = robust.loc[i]
            if not s.get(f"robust_{CLEAN}_n"):
                continue
            row = {"method": t.at[i, "row"], "clean": cells(s, CLEAN, t.at[i, "method"])[0]}
            for e in eps:
                row[f"ε={e}"], row[f"ε={e} Δ vs baseline"] = cells(s, e, t.at[i, "method"])
            rows.append(row)
        r = radii[radii.task == task]
        mean_radius = ", ".join(f"ε={e}: {g.radius.mean():.4g}" for e, g in r.groupby("epsilon", sort=False))
        norms = ", ".join(f"{m}: {g.embedding_norm.mean():.4g}" for m, g in r.groupby("model"))
        parts.append(
            f"### {task.upper()}\n\nMean absolute radius (over runs and examples): {mean_radius}; "
            f"mean token-embedding norm: {norms}.\n\n" + md_table(pd.DataFrame(rows))
        )
    return "\n\n".join(parts)


def mixed(settings: list) -> str:
    """The warning a section carries when its records were attacked with more than one setting."""
    if len(settings) < 2:
        return ""
    return "\n**The records were attacked with different settings; their numbers are averaged together here.**"


def radii(runs: pd.DataFrame) -> pd.DataFrame:
    """Per attacked run and eps: its task, model, mean absolute radius and embedding norm."""
    rows = [
        {
            "task": r.task,
            "model": r.model,
            "epsilon": e,
            "radius": radius,
            "embedding_norm": r.attack.get("embedding_norm"),
        }
        for r in runs.itertuples()
        if CLEAN in r.robust
        for e, radius in sorted(r.attack.get("radii", {}).items(), key=lambda kv: float(kv[0]))
    ]
    return pd.DataFrame(rows, columns=["task", "model", "epsilon", "radius", "embedding_norm"])


def group_intervals(runs: pd.DataFrame, summary: pd.DataFrame, measures: list[tuple], column: str) -> pd.DataFrame:
    """Per group and measure (``measures``: (the run's key, its value in ``column``)): n, mean and 95 %
    t-interval over the group's complete runs that have it."""
    rows = []
    for s in summary.itertuples():
        group = runs[(runs.settings_id == s.settings_id) & (runs.status != DIVERGED)]
        for key, value in measures:
            acc = values(group, key).dropna()
            if not len(acc):
                continue
            lo, hi = ci95(acc)
            rows.append(
                {
                    "task": s.task,
                    "model": s.model,
                    "method": s.method,
                    "label": s.label,
                    "settings_id": s.settings_id,
                    column: value,
                    "n": len(acc),
                    "mean": acc.mean(),
                    "ci_low": lo,
                    "ci_high": hi,
                }
            )
    columns = ["task", "model", "method", "label", "settings_id", column, "n", "mean", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=columns)


def curve_data(runs: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per group and eps (0: the clean accuracy of the attacked examples): n, mean and 95 % t-interval over
    its complete attacked runs."""
    eps = epsilons(runs)
    return group_intervals(runs, summary, [(CLEAN, 0.0)] + [(e, float(e)) for e in eps] if eps else [], "epsilon")


def panels(data: pd.DataFrame, width: float = 6.5):
    """A figure of one panel per (task, model) of ``data``, each ``width`` inches wide: (figure, [(axis, task,
    model, rows)], whether several models are drawn)."""
    from experiments.report.plots import pyplot

    plt = pyplot()
    groups = list(data.groupby(["task", "model"], sort=False))
    fig, axes = plt.subplots(1, len(groups), figsize=(width * len(groups), 4.5), squeeze=False)
    return fig, [(ax, task, model, p) for ax, ((task, model), p) in zip(axes[0], groups)], data.model.nunique() > 1


def finish(fig, ax, path: Path) -> None:
    """Every panel's shared end: percent axis, legend; the first panel's label; saved to ``path``."""
    from experiments.report.plots import clip_to_percent, save

    for a in fig.axes:
        clip_to_percent(a)
        a.legend(fontsize=7)
    ax.set_ylabel("dev accuracy (%)")
    fig.tight_layout()
    save(fig, path)


def plot(data: pd.DataFrame, path: Path) -> None:
    fig, drawn, several = panels(data)
    for ax, task, model, p in drawn:
        for i, (_, g) in enumerate(p.groupby("settings_id", sort=False)):
            color = f"C{i % 10}"
            ax.plot(g.epsilon, g["mean"], "o-", color=color, ms=4, label=column_name(g.iloc[0], several))
            ax.fill_between(g.epsilon, g.ci_low.astype(float), g.ci_high.astype(float), color=color, alpha=0.15, lw=0)
        ax.set_title(f"{task.upper()} ({model}): dev accuracy under attack, mean and 95% band", fontsize=10)
        ax.set_xlabel("eps (relative; 0: clean)")
        ax.set_xticks(sorted(p.epsilon.unique()), [f"{v:g}" for v in sorted(p.epsilon.unique())])
        ax.grid(alpha=0.3)
    finish(fig, drawn[0][0], path)


def text_settings(runs: pd.DataFrame) -> list[dict]:
    """The distinct text-attack settings of the records (each as the ``TEXT_SETTINGS`` keys of ``text_attack``)."""
    seen = []
    for r in runs.robust:
        if SETTINGS_KEY in r and r[SETTINGS_KEY] not in seen:
            seen.append(r[SETTINGS_KEY])
    return seen


def text_markdown(runs: pd.DataFrame, summary: pd.DataFrame, robust: pd.DataFrame) -> str:
    several = runs.model.nunique() > 1
    settings = text_settings(runs)
    described = "; ".join(", ".join(f"{k}={v}" for k, v in s.items()) for s in settings) or "none recorded"
    keys = text_keys(runs)
    parts = [
        (
            "## Accuracy under the text attack: mean ± std (n seeds), paired difference to the baseline "
            "(`text_attack.png`, numbers in `text_attack.csv`)"
        ),
        "Greedy character substitutions (homophones, look-alikes, traditional forms) on the first N dev "
        "examples, at most `budget` of the characters each model sees; only the correctly classified are "
        "attacked (docs/attack.md). Accuracy under attack, random substitutions and transfer are in % of all "
        'N; the success rate of the attacked; "transfer": accuracy on the texts made against another run '
        "(`make attack ... eval.text_attack.from=<record>`). Settings: " + described + "." + mixed(settings),
    ]
    table = summary.assign(row=[column_name(r, several) for r in summary.itertuples()])
    for task, t in table.groupby("task", sort=False):
        rows = []
        for i in t.index:
            s, method = robust.loc[i], t.at[i, "method"]
            if not any(s.get(f"{k}_n", 0) for k in keys):
                continue
            row = {"method": t.at[i, "row"]}
            for key, name in (
                ("text_attack_clean", "clean"),
                ("text_attack_acc", "under text attack"),
                ("text_attack_success", "success rate"),
            ):
                row[name], delta = cells(s, key, method)
                if key != "text_attack_clean":
                    row[f"{name} Δ vs baseline"] = delta
            for key, name in (
                ("text_attack_random", "random substitutions"),
                ("text_attack_transfer", "transfer"),
                ("text_attack_changed", "characters changed %"),
                ("text_attack_queries", "queries"),
            ):
                if key in keys:
                    row[name] = cells(s, key, method)[0]
            rows.append(row)
        parts.append(f"### {task.upper()}\n\n" + md_table(pd.DataFrame(rows)))
    return "\n\n".join(parts)


TEXT_BARS = {
    "text_attack_clean": "clean",
    "text_attack_acc": "text attack",
    "text_attack_random": "random",
    "text_attack_transfer": "transfer",
}


def text_data(runs: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per group and ``TEXT_BARS`` key: n, mean and 95 % t-interval over its complete attacked runs."""
    return group_intervals(runs, summary, [(key, key) for key in TEXT_BARS], "measure")


def plot_text(data: pd.DataFrame, path: Path) -> None:
    """Bars per group: clean, under the text attack, under random substitutions, transfer; 95 % intervals."""
    fig, drawn, several = panels(
        data, width=max(6.5, 2.4 * data.groupby(["task", "model"]).settings_id.nunique().max())
    )
    for ax, task, model, p in drawn:
        groups = list(dict.fromkeys(p.settings_id))
        measures = [m for m in TEXT_BARS if m in set(p.measure)]
        width = 0.8 / len(measures)
        for k, m in enumerate(measures):
            g = p[p.measure == m].set_index("settings_id").reindex(groups)
            x = np.arange(len(groups)) + (k - (len(measures) - 1) / 2) * width
            err = np.array([(g["mean"] - g.ci_low).astype(float), (g.ci_high - g["mean"]).astype(float)])
            ax.bar(
                x, g["mean"].astype(float), width, yerr=np.nan_to_num(err), capsize=2, color=f"C{k}", label=TEXT_BARS[m]
            )
        names = [
            column_name(p[p.settings_id == sid].iloc[0], several).replace(" (", "\n(").replace("=", "=\n")
            for sid in groups
        ]
        ax.set_xticks(np.arange(len(groups)), names, fontsize=7)
        ax.set_title(
            f"{task.upper()} ({model}): dev accuracy under the text attack, mean and 95% interval", fontsize=10
        )
        ax.grid(alpha=0.3, axis="y")
    finish(fig, drawn[0][0], path)


def write(results_dir: Path, runs: pd.DataFrame, summary: pd.DataFrame, rounded: int):
    """(summary columns, seeds.csv columns, table.md section, written paths) when some record was attacked,
    else None: a table without attacks is left exactly as it was."""
    if not any(runs.robust.map(bool)):
        return None
    robust = summarise(runs, summary)
    sections, written = [], []
    if epsilons(runs):
        data = curve_data(runs, summary)
        png, csv = results_dir / "robustness.png", results_dir / "robustness.csv"
        plot(data, png)
        data.round(rounded).to_csv(csv, index=False)
        sections.append(markdown(runs, summary, robust, attack_settings(runs), radii(runs)))
        written += [png, csv]
    if text_keys(runs):
        data = text_data(runs, summary)
        png, csv = results_dir / "text_attack.png", results_dir / "text_attack.csv"
        plot_text(data, png)
        data.round(rounded).to_csv(csv, index=False)
        sections.append(text_markdown(runs, summary, robust))
        written += [png, csv]
    return robust, seed_columns(runs), "\n\n".join(sections), written
