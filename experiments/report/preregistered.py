"""A preregistered study's own statistics, from its run records alone (docs/evidence/*/PLAN.md).

    python -m experiments.commands.study tuning docs/evidence/tnews-self-pretrained/tuning   # -> tuning.md
    python -m experiments.commands.study main docs/evidence/tnews-self-pretrained            # -> analysis.md

``make table`` shows every group with its 95 % t-interval. A study adds what its plan fixed in
advance and the table does not do:

- **tuning**: per method, the epsilon with the highest mean best dev accuracy over the tuning seeds;
  a mean within ``TIE`` (0.05 points) of the best goes to the smaller epsilon;
- **main**: the primary comparisons (each method against the baseline of the same model, on clean
  best dev accuracy, paired by seed) with two-sided paired t-tests and Holm's step-down correction
  over them, their Bonferroni intervals; the secondary, uncorrected differences under attack at
  each eps; and the baseline of the pretrained model against the same shape from random init.

A run's model is "pretrained" when its settings name a pretraining (``settings.model.pretrained``),
else "random init". The data model is the table's: one DataFrame row per record (``frame``), cells
written by ``formatting``. Diverged runs are counted, never averaged (the table's rule). Never imports
TensorFlow.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
from scipy import stats

from experiments import records
from experiments.errors import UserError
from experiments.report.formatting import interval, md_table, mean_std, number, paired_cell
from experiments.report.stats import ci95

TIE = 0.05  # points of best dev accuracy: a mean this close to the best counts as a tie (PLAN.md)
ALPHA = 0.05
PRIMARY = ("fgm", "gp")  # the methods whose clean comparisons are corrected together (PLAN.md)
RANDOM_INIT = "random init"
COLUMNS = ["method", "init", "epsilon", "seed", "status", "best_dev_acc"]


def frame(runs) -> pd.DataFrame:
    """One row per run record (a DataFrame made by this function is returned as it is): method, init (the
    pretraining's id or "random init"), epsilon, seed, status, best_dev_acc and ``robust_<eps>`` in %."""
    if isinstance(runs, pd.DataFrame):
        return runs
    rows = []
    for r in runs:
        settings = r.get("settings", {})
        rows.append(
            {
                "method": r["method"],
                "init": settings.get("model", {}).get("pretrained") or RANDOM_INIT,
                "epsilon": settings.get("method", {}).get("epsilon"),
                "seed": int(r["seed"]),
                "status": r["status"],
                "best_dev_acc": percent(r.get("best_dev_acc")),
                **{f"robust_{e}": percent(a) for e, a in (r.get("robust_dev_acc") or {}).items()},
                **text_attack_fields(r),
            }
        )
    runs = pd.DataFrame(rows, columns=COLUMNS + sorted({c for row in rows for c in row} - set(COLUMNS)))
    return runs.astype({"epsilon": float, "best_dev_acc": float})


def text_attack_fields(record: dict) -> dict:
    """The text attack's figures of a record (``text_*``, in %; queries per example as they are), if it has them.
    Transfer is the mean over the runs whose texts it was scored on (one in a study: its seed's baseline)."""
    text, transfer = record.get("text_attack") or {}, record.get("text_attack_transfer") or {}
    out = {}
    if text:
        out = {
            "text_clean": percent(text["clean_acc"]),
            "text_acc": percent(text["acc"]),
            "text_success": percent(text["success_rate"]),
            "text_random": percent((text.get("random") or {}).get("acc")),
            "text_changed": percent(text["changed_share_mean"]),
            "text_queries": float(text["queries_mean"]),
            "text_settings": ", ".join(
                f"{k} {text.get(k)}"
                for k in ("sources", "budget", "max_queries", "max_samples", "random_baseline", "seed")
            ).replace("'", ""),
        }
    if transfer:
        out["text_transfer"] = percent(np.mean([t["acc"] for t in transfer.values()]))
        out["text_transfer_rate"] = percent(np.mean([t["transfer_rate"] for t in transfer.values()]))
    return out


def percent(value) -> float:
    return np.nan if value is None else 100 * float(value)


def epsilons(runs: pd.DataFrame) -> list[str]:
    """Every eps some complete run was attacked at, in increasing order (as the records spell it)."""
    done = runs[runs.status == records.COMPLETE]
    attacked = [c for c in done.columns if c.startswith("robust_") and done[c].notna().any()]
    return sorted((c.removeprefix("robust_") for c in attacked), key=float)


def by_seed(runs: pd.DataFrame, column: str = "best_dev_acc") -> pd.Series:
    """``column`` by seed (in %) over the complete runs that have it."""
    done = runs[runs.status == records.COMPLETE]
    return done.set_index("seed")[column].dropna() if column in done else pd.Series(dtype=float)


def paired(a, b) -> dict:
    """a - b (by seed: Series or dicts) over the seeds both have: n, mean, 95 % and 97.5 % t-intervals, two-sided
    paired t p-value."""
    a, b = pd.Series(a, dtype=float), pd.Series(b, dtype=float)
    seeds = sorted(int(s) for s in set(a.index) & set(b.index))
    d = a[seeds].to_numpy() - b[seeds].to_numpy()
    out = {"seeds": seeds, "n": len(d), "mean": float(d.mean()) if len(d) else np.nan}
    if len(d) < 2:
        return {**out, "ci95": (np.nan, np.nan), "ci975": (np.nan, np.nan), "p": np.nan}
    sem = stats.sem(d)
    if sem == 0:
        return {**out, "ci95": (out["mean"],) * 2, "ci975": (out["mean"],) * 2, "p": 0.0 if out["mean"] else 1.0}
    ci975 = tuple(float(x) for x in stats.t.interval(1 - ALPHA / 2, len(d) - 1, loc=d.mean(), scale=sem))
    return {
        **out,
        "ci95": tuple(float(x) for x in ci95(d)),
        "ci975": ci975,
        "p": float(stats.ttest_rel(a[seeds].to_numpy(), b[seeds].to_numpy()).pvalue),
    }


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: reject where adjusted p <= alpha."""
    m = len(pvalues)
    order = np.argsort(pvalues, kind="stable")
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def verdict(mean: float, adjusted_p: float) -> str:
    if not np.isfinite(adjusted_p) or adjusted_p > ALPHA:
        return "no detectable difference"
    return "helps" if mean > 0 else "harms"


def mean_of(acc: pd.Series) -> float:
    return float(np.mean(acc.to_numpy())) if len(acc) else np.nan


def tuning_choice(runs) -> dict[str, dict]:
    """Per method other than the baseline (runs: records or their ``frame``): {eps: (mean best dev % over
    seeds, n)} and the chosen eps."""
    runs = frame(runs)
    out = {}
    for method, m in runs[runs.method != "baseline"].groupby("method"):
        means = {eps: (mean_of(acc := by_seed(g)), len(acc)) for eps, g in m.groupby("epsilon")}
        best = max(mean for mean, _ in means.values())
        chosen = min(eps for eps, (mean, _) in means.items() if mean >= best - TIE)
        out[method] = {"means": means, "chosen": chosen}
    return out


def tuning_markdown(runs) -> str:
    """tuning.md of the complete runs (records or their ``frame``)."""
    runs = frame(runs)
    runs = runs[runs.status == records.COMPLETE]
    choice = tuning_choice(runs)
    seeds = sorted(runs.seed.unique())
    base = by_seed(runs[runs.method == "baseline"])
    rows = [["baseline", "–", *(number(base.get(s)) for s in seeds), number(mean_of(base)), ""]]
    for method, c in choice.items():
        for eps, (mean, _) in c["means"].items():
            acc = by_seed(runs[(runs.method == method) & (runs.epsilon == eps)])
            rows.append(
                [
                    method,
                    f"{eps:g}",
                    *(number(acc.get(s)) for s in seeds),
                    number(mean),
                    "**yes**" if eps == c["chosen"] else "",
                ]
            )
    table = pd.DataFrame(rows, columns=["method", "epsilon", *(f"seed {s}" for s in seeds), "mean", "chosen"])
    lines = [
        "# Tuning: the epsilon of each method by the plan's rule",
        "",
        f"Generated by `python -m experiments.commands.study tuning` from {len(runs)} complete run records in "
        f"`runs/` (seeds {', '.join(map(str, seeds))}). Rule (PLAN.md): per method, the epsilon with the "
        f"highest mean best dev accuracy over the tuning seeds; a mean within {TIE} points of the best goes to "
        "the smaller epsilon. The baseline is shown for reference only.",
        "",
        md_table(table),
        "",
        "Chosen: " + ", ".join(f"{m} epsilon = {c['chosen']:g}" for m, c in choice.items()) + ".",
    ]
    return "\n".join(lines) + "\n"


def study_arms(runs: pd.DataFrame, hint: str) -> tuple[dict, str]:
    """``runs`` by arm, {(method, init): rows}, and the one pretrained model's id; one line naming the arms
    found (and ``hint``) unless there is exactly one pretrained model and its baseline."""
    arms = dict(list(runs.groupby(["method", "init"])))
    pretrained = sorted({p for _, p in arms if p != RANDOM_INIT})
    if len(pretrained) != 1 or ("baseline", pretrained[0]) not in arms:
        raise UserError(f"{hint}; found arms {sorted(arms)}")
    return arms, pretrained[0]


def arm_name(key: tuple) -> str:
    """``method, pretrained`` or ``method, random init``."""
    method, init = key
    return f"{method}, {'pretrained' if init != RANDOM_INIT else 'random init'}"


def spread(values: pd.Series) -> str:
    """``mean ± std`` of ``values`` (summed in their order), "–" without any."""
    v = values.to_numpy()
    return mean_std(v.mean() if len(v) else np.nan, v.std(ddof=1) if len(v) > 1 else np.nan)


def primary_section(arms: dict, model: str, column: str, title: str) -> list[str]:
    """The primary tests on ``column``: each of ``PRIMARY`` against the pretrained baseline, paired by seed,
    with Holm's correction over them (its heading and table; the caller's lines follow)."""
    base = arms[("baseline", model)]
    primary = [
        (m, paired(by_seed(arms[(m, model)], column), by_seed(base, column))) for m in PRIMARY if (m, model) in arms
    ]
    adjusted = holm([t["p"] for _, t in primary]) if primary else []
    rows = [
        [
            f"{m} − baseline",
            t["n"],
            number(t["mean"], True),
            interval(*t["ci95"]),
            interval(*t["ci975"]),
            f"{t['p']:.3g}",
            f"{p_adj:.3g}",
            verdict(t["mean"], p_adj),
        ]
        for (m, t), p_adj in zip(primary, adjusted)
    ]
    columns = [
        "comparison",
        "n",
        "mean Δ",
        "95 % interval",
        "97.5 % interval (Bonferroni)",
        "p (paired t, two-sided)",
        "Holm-adjusted p",
        "verdict at α = 0.05",
    ]
    return [
        "",
        f"## Primary: {title}, each method against the baseline (Holm over {len(primary)})",
        "",
        md_table(pd.DataFrame(rows, columns=columns)),
        "",
    ]


def main_markdown(everyone) -> str:
    """analysis.md of the complete and diverged runs (records or their ``frame``)."""
    everyone = frame(everyone)
    arms, model = study_arms(everyone, "a study's main grid holds the runs of one pretrained model with its baseline")
    base = arms[("baseline", model)]
    n_complete = int((everyone.status == records.COMPLETE).sum())
    diverged = int((everyone.status == records.DIVERGED).sum())
    eps = epsilons(everyone)

    rows = []
    for (method, init), rs in sorted(arms.items(), key=lambda kv: (kv[0][1] == RANDOM_INIT, kv[0][0])):
        acc = by_seed(rs)  # in the records' order, as the mean has always been summed
        rows.append(
            [
                arm_name((method, init)),
                ", ".join(sorted({f"{e:g}" for e in rs.epsilon.dropna()})) or "–",
                len(acc),
                int((rs.status == records.DIVERGED).sum()),
                spread(acc),
                ", ".join(f"{s}: {a:.2f}" for s, a in acc.sort_index().items()),
            ]
        )
    lines = [
        "# The study's tests, by the preregistered plan",
        "",
        f"Generated by `python -m experiments.commands.study main` from the {n_complete} complete run records in "
        "`runs/`"
        + (f" ({diverged} diverged, left out)" if diverged else "")
        + f"; seeds {', '.join(map(str, sorted(everyone.seed.unique())))}. Accuracies in %, differences in "
        "points, paired by seed (a method's run against the baseline run of the same seed and model). "
        f"Pretrained model: `{model}`.",
        "",
        "## The arms",
        "",
        md_table(
            pd.DataFrame(rows, columns=["arm", "epsilon", "n", "diverged", "best dev accuracy, mean ± std", "per seed"])
        ),
    ]

    lines += primary_section(arms, model, "best_dev_acc", "clean best dev accuracy")
    lines += [
        'A method "helps" only if its Holm-adjusted test rejects and its mean difference is positive '
        "(PLAN.md); otherwise the finding is no detectable difference (or a detectable harm).",
    ]

    if eps:
        rows = []
        for m in PRIMARY:
            if (m, model) in arms:
                tests = [paired(by_seed(arms[(m, model)], f"robust_{e}"), by_seed(base, f"robust_{e}")) for e in eps]
                rows.append(
                    [f"{m} − baseline", *(paired_cell(t["mean"], *t["ci95"], t["n"], short=True) for t in tests)]
                )
        lines += [
            "",
            "## Secondary (uncorrected): under attack, each method against the baseline",
            "",
            "Accuracy under attack of the best-dev weights on the attacked dev examples (PGD, eps relative to "
            "each run's own mean token-embedding norm; docs/attack.md).",
            "",
            md_table(pd.DataFrame(rows, columns=["comparison", *(f"ε={e}: mean Δ [95 %] (n)" for e in eps)])),
        ]

    if ("baseline", RANDOM_INIT) in arms:
        scratch = arms[("baseline", RANDOM_INIT)]
        rows = []
        for label, column in [("clean best dev accuracy", "best_dev_acc")] + [
            (f"under attack, ε={e}", f"robust_{e}") for e in eps
        ]:
            t = paired(by_seed(base, column), by_seed(scratch, column))
            rows.append([label, t["n"], number(t["mean"], True), interval(*t["ci95"]), f"{t['p']:.3g}"])
        lines += [
            "",
            "## Secondary (uncorrected): what the pretraining buys (baseline, pretrained − random init)",
            "",
            md_table(pd.DataFrame(rows, columns=["metric", "n", "mean Δ", "95 % interval", "p (paired t)"])),
        ]
    return "\n".join(lines) + "\n"


def text_attack_markdown(everyone) -> str:
    """analysis.md of the text-attack addendum (PLAN.md, 2026-12-06) from the main grid's records (or their
    ``frame``) with ``text_attack`` (and, for FGM, GP and the random-init baseline, ``text_attack_transfer``)."""
    everyone = frame(everyone)
    done = everyone[(everyone.status == records.COMPLETE) & everyone.get("text_acc", pd.Series(dtype=float)).notna()]
    arms, model = study_arms(
        done,
        "the text-attack analysis needs the attacked runs of one pretrained model with its baseline (attack them "
        'first: make attack RUN=... ARGS="eval.text_attack.enabled=true")',
    )
    base = arms[("baseline", model)]
    order = sorted(arms, key=lambda k: (k[1] == RANDOM_INIT, k[0] != "baseline", k[0]))

    metrics = [
        ("text_clean", "clean (the N)"),
        ("text_acc", "under the text attack"),
        ("text_success", "success rate"),
        ("text_random", "random substitutions"),
        ("text_transfer", "transfer set"),
        ("text_transfer_rate", "transfer rate"),
        ("text_changed", "characters changed"),
        ("text_queries", "queries"),
    ]
    rows = [
        [arm_name(k), len(by_seed(arms[k], "text_acc")), *(spread(by_seed(arms[k], c)) for c, _ in metrics)]
        for k in order
    ]
    settings = sorted({str(v) for v in done.get("text_settings", pd.Series(dtype=object)).dropna()})
    lines = [
        "# The study under the text attack: the addendum's tests",
        "",
        f"Generated by `python -m experiments.commands.study text-attack` from the {len(done)} complete, "
        "text-attacked run records in `runs/`; seeds "
        f"{', '.join(map(str, sorted(done.seed.unique())))}. The settings and the tests are PLAN.md's addendum "
        f"of 2026-12-06. Pretrained model: `{model}`. Accuracies, rates and shares in % (accuracies of all N "
        "examples; the success rate of the correctly classified ones, which alone are attacked), differences "
        "in points, paired by seed. Transfer set: this run on the texts made against its seed's pretrained "
        "baseline; transfer rate: the share of that baseline's successful attacks which also fool this run, "
        "among the examples it classifies right unedited. Characters changed (the share of those the model sees) "
        "and queries (texts scored) are per attacked example.",
        "",
        "## The arms (mean ± std over seeds)",
        "",
        md_table(pd.DataFrame(rows, columns=["arm", "n", *(label for _, label in metrics)])),
        "",
        "Under the text attack, per seed: "
        + "; ".join(
            f"{arm_name(k)}: "
            + ", ".join(f"{s}: {a:.2f}" for s, a in by_seed(arms[k], "text_acc").sort_index().items())
            for k in order
        )
        + ".",
    ]

    lines += primary_section(arms, model, "text_acc", "accuracy under the text attack")
    lines += [
        'A method "resists the text attack better" only if its Holm-adjusted test rejects with a positive mean '
        "difference (PLAN.md's addendum); otherwise no detectable difference (or a detectable harm).",
    ]

    comparisons = []
    for m in PRIMARY:
        if (m, model) in arms:
            for column, label in [("text_success", "success rate"), ("text_random", "random substitutions")]:
                comparisons.append((f"{m} − baseline", label, arms[(m, model)], base, column))
    if ("fgm", model) in arms and ("gp", model) in arms:
        fgm, gp = arms[("fgm", model)], arms[("gp", model)]
        comparisons += [
            ("gp − fgm", "under the text attack", gp, fgm, "text_acc"),
            ("gp − fgm", "transfer set", gp, fgm, "text_transfer"),
        ]
    if ("baseline", RANDOM_INIT) in arms:
        scratch = arms[("baseline", RANDOM_INIT)]
        for column, label in [("text_acc", "under the text attack"), ("text_success", "success rate")]:
            comparisons.append(("baseline: pretrained − random init", label, base, scratch, column))
    rows = []
    for comparison, label, a, b, column in comparisons:
        t = paired(by_seed(a, column), by_seed(b, column))
        rows.append([comparison, label, t["n"], number(t["mean"], True), interval(*t["ci95"]), f"{t['p']:.3g}"])
    transfer = [k for k in order if by_seed(arms[k], "text_transfer").size]
    lines += [
        "",
        "## Descriptive (uncorrected), paired by seed",
        "",
        md_table(pd.DataFrame(rows, columns=["comparison", "metric", "n", "mean Δ", "95 % interval", "p (paired t)"])),
    ]
    if transfer:
        rows = []
        for k in transfer:
            acc, rate = by_seed(arms[k], "text_transfer"), by_seed(arms[k], "text_transfer_rate")
            own = paired(acc, by_seed(base, "text_acc"))
            rows.append(
                [
                    arm_name(k),
                    len(acc),
                    number(mean_of(acc)),
                    "[{}, {}]".format(*map(number, ci95(acc))),
                    number(mean_of(rate)),
                    "[{}, {}]".format(*map(number, ci95(rate))),
                    paired_cell(own["mean"], *own["ci95"], own["n"], short=True),
                ]
            )
        lines += [
            "",
            "## The transfer set: texts made against each seed's pretrained baseline (black box)",
            "",
            md_table(
                pd.DataFrame(
                    rows,
                    columns=[
                        "arm",
                        "n",
                        "accuracy",
                        "95 % interval",
                        "transfer rate",
                        "95 % interval",
                        "Δ vs the baseline on its own texts [95 %] (n)",
                    ],
                )
            ),
        ]
    if settings:
        lines += ["", "Attack settings of these records: " + "; ".join(settings) + "."]
    return "\n".join(lines) + "\n"


READING_SEED, READING_SIZE = 28, 50  # PLAN.md's addendum: random.Random(28).sample(pool, 50)
MISSING_JUDGEMENT = "not read yet"


def reading_sample(texts: dict[int, list[dict]], k: int = READING_SIZE, seed: int = READING_SEED) -> list[dict]:
    """The adversarial texts to read: ``k`` drawn with ``random.Random(seed)`` from the successful attacks of
    ``texts`` ({seed: the rows of its ``.text_attack.jsonl``}), pooled in (seed, dev index) order; each row
    gains its ``seed``."""
    pool = [
        {"seed": s, **r}
        for s in sorted(texts)
        for r in sorted(texts[s], key=lambda r: r["index"])
        if r["status"] == "success"
    ]
    if len(pool) < k:
        raise UserError(f"{len(pool)} successful attacks to draw {k} texts from; attack more runs first")
    return random.Random(seed).sample(pool, k)


def reading_markdown(
    sample: list[dict], label_names: dict[str, str], judgements: dict[str, dict], texts: bool = False
) -> str:
    """examples.md: the sample with each one's edits and predictions, and the reader's judgement of it
    (``judgements``: {"<seed>:<dev index>": {"same": bool, "note": str}}, written by hand). The titles
    themselves (the dev text and its edited form) only with ``texts``: the CLUE data is not committed."""
    rows, same = [], 0
    for i, r in enumerate(sample, 1):
        j = judgements.get(f"{r['seed']}:{r['index']}")
        same += bool(j and j["same"])
        edits = ", ".join(f"{e['from']}→{e['to']} ({e['source']})" for e in r["substitutions"])
        rows.append(
            [
                i,
                r["seed"],
                r["index"],
                *([r["text"], r["adversarial_text"]] if texts else [", ".join(map(str, r["positions"]))]),
                edits,
                label_names.get(r["label"], r["label"]),
                label_names.get(r["prediction"], r["prediction"]),
                MISSING_JUDGEMENT if j is None else ("same" if j["same"] else "changed") + f": {j['note']}",
            ]
        )
    judged = sum(f"{r['seed']}:{r['index']}" in judgements for r in sample)
    lines = [
        f"# {len(sample)} adversarial texts made against the pretrained baseline, read",
        "",
        "Drawn by `python -m experiments.commands.study sample` (PLAN.md's addendum: "
        f"`random.Random({READING_SEED}).sample(pool, {READING_SIZE})`, the pool the successful attacks of the "
        "pretrained baseline's seeds in (seed, dev index) order). The judgement: would a Chinese reader still "
        "take the edited text for the same headline with the same label? (judgements.json, by hand)",
        "",
        f"**{same} of {judged} judged the same headline with the same label.**",
        "",
        *(
            []
            if texts
            else [
                "The titles are TNEWS's (CLUE), which this repository does not hold: with the dev file at hand, "
                "`python -m experiments.commands.study sample <this folder> --texts <runs> --with-texts` writes "
                "`examples-with-texts.md` (git-ignored) with each original and edited title. Positions count the "
                "characters of the title from 0.",
                "",
            ]
        ),
        md_table(
            pd.DataFrame(
                rows,
                columns=[
                    "#",
                    "seed",
                    "dev index",
                    *(["text", "edited"] if texts else ["positions"]),
                    "edits",
                    "label",
                    "predicted",
                    "judgement",
                ],
            )
        ),
    ]
    return "\n".join(lines) + "\n"
