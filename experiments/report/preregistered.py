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
else "random init". Diverged runs are counted, never averaged (the table's rule). Never imports
TensorFlow.
"""

from __future__ import annotations


import numpy as np
from scipy import stats

from experiments.errors import UserError
from experiments import records
from experiments.report.stats import ci95

TIE = 0.05  # points of best dev accuracy: a mean this close to the best counts as a tie (PLAN.md)
ALPHA = 0.05
PRIMARY = ("fgm", "gp")  # the methods whose clean comparisons are corrected together (PLAN.md)
RANDOM_INIT = "random init"


def arm(record: dict) -> tuple[str, str]:
    """(method, the pretraining's id or "random init") of a run."""
    return record["method"], (record.get("settings", {}).get("model", {}).get("pretrained") or RANDOM_INIT)


def epsilon(record: dict):
    return record.get("settings", {}).get("method", {}).get("epsilon")


def by_seed(runs: list[dict], value) -> dict[int, float]:
    """{seed: value(run) in %} over complete runs whose value exists."""
    out = {}
    for r in runs:
        v = value(r)
        if r["status"] == records.COMPLETE and v is not None:
            out[int(r["seed"])] = 100 * float(v)
    return out


def paired(a: dict[int, float], b: dict[int, float]) -> dict:
    """a - b over the seeds both have: n, mean, 95 % and 97.5 % t-intervals, two-sided paired t p-value."""
    seeds = sorted(set(a) & set(b))
    d = np.array([a[s] - b[s] for s in seeds])
    out = {"seeds": seeds, "n": len(d), "mean": float(d.mean()) if len(d) else np.nan}
    if len(d) < 2:
        return {**out, "ci95": (np.nan, np.nan), "ci975": (np.nan, np.nan), "p": np.nan}
    sem = stats.sem(d)
    if sem == 0:
        return {**out, "ci95": (out["mean"],) * 2, "ci975": (out["mean"],) * 2, "p": 0.0 if out["mean"] else 1.0}
    ci975 = tuple(float(x) for x in stats.t.interval(1 - ALPHA / 2, len(d) - 1, loc=d.mean(), scale=sem))
    return {**out, "ci95": tuple(float(x) for x in ci95(d)), "ci975": ci975,
            "p": float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)}


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


def tuning_choice(runs: list[dict]) -> dict[str, dict]:
    """Per method other than the baseline: {eps: (mean best dev % over seeds, n)} and the chosen eps."""
    out = {}
    for method in sorted({r["method"] for r in runs} - {"baseline"}):
        means = {}
        for eps in sorted({epsilon(r) for r in runs if r["method"] == method}):
            accs = by_seed([r for r in runs if r["method"] == method and epsilon(r) == eps], lambda r: r["best_dev_acc"])
            means[eps] = (float(np.mean(list(accs.values()))) if accs else np.nan, len(accs))
        best = max(m for m, _ in means.values())
        chosen = min(eps for eps, (m, _) in means.items() if m >= best - TIE)
        out[method] = {"means": means, "chosen": chosen}
    return out


def fmt(x: float, sign: bool = True) -> str:
    return "–" if not np.isfinite(x) else (f"{x:+.2f}" if sign else f"{x:.2f}")


def interval(ci) -> str:
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def tuning_markdown(runs: list[dict]) -> str:
    choice = tuning_choice(runs)
    seeds = sorted({int(r["seed"]) for r in runs})
    base = by_seed([r for r in runs if r["method"] == "baseline"], lambda r: r["best_dev_acc"])
    lines = [f"# Tuning: the epsilon of each method by the plan's rule", "",
             f"Generated by `python -m experiments.commands.study tuning` from {len(runs)} complete run records in `runs/` "
             f"(seeds {', '.join(map(str, seeds))}). Rule (PLAN.md): per method, the epsilon with the highest mean "
             f"best dev accuracy over the tuning seeds; a mean within {TIE} points of the best goes to the smaller "
             f"epsilon. The baseline is shown for reference only.", "",
             "| method | epsilon | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | chosen |",
             "|---|---|" + "---|" * len(seeds) + "---|---|"]
    lines.append("| baseline | – | " + " | ".join(fmt(base.get(s, np.nan), False) for s in seeds)
                 + f" | {fmt(np.mean(list(base.values())) if base else np.nan, False)} |  |")
    for method, c in choice.items():
        for eps, (mean, _) in c["means"].items():
            accs = by_seed([r for r in runs if r["method"] == method and epsilon(r) == eps], lambda r: r["best_dev_acc"])
            lines.append(f"| {method} | {eps:g} | " + " | ".join(fmt(accs.get(s, np.nan), False) for s in seeds)
                         + f" | {fmt(mean, False)} | {'**yes**' if eps == c['chosen'] else ''} |")
    lines += ["", "Chosen: " + ", ".join(f"{m} epsilon = {c['chosen']:g}" for m, c in choice.items()) + "."]
    return "\n".join(lines) + "\n"


def robust_at(eps: str):
    return lambda r: (r.get("robust_dev_acc") or {}).get(eps)


def main_markdown(runs: list[dict], everyone: list[dict]) -> str:
    arms: dict[tuple[str, str], list[dict]] = {}
    for r in everyone:
        arms.setdefault(arm(r), []).append(r)
    pretrained = sorted({p for _, p in arms if p != RANDOM_INIT})
    if len(pretrained) != 1 or ("baseline", pretrained[0]) not in arms:
        raise UserError(f"a study's main grid holds the runs of one pretrained model with its baseline; "
                        f"found arms {sorted(arms)}")
    model = pretrained[0]
    base = arms[("baseline", model)]
    clean = lambda r: r["best_dev_acc"]
    seeds = sorted({int(r["seed"]) for r in everyone})
    diverged = sum(r["status"] == records.DIVERGED for r in everyone)
    eps = sorted({e for r in runs for e in (r.get("robust_dev_acc") or {})}, key=float)

    lines = ["# The study's tests, by the preregistered plan", "",
             f"Generated by `python -m experiments.commands.study main` from the {len(runs)} complete run records in `runs/`"
             + (f" ({diverged} diverged, left out)" if diverged else "")
             + f"; seeds {', '.join(map(str, seeds))}. Accuracies in %, differences in points, paired by seed "
             f"(a method's run against the baseline run of the same seed and model). Pretrained model: `{model}`.", "",
             "## The arms", "", "| arm | epsilon | n | diverged | best dev accuracy, mean ± std | per seed |", "|---|---|---|---|---|---|"]
    for (method, init), rs in sorted(arms.items(), key=lambda kv: (kv[0][1] == RANDOM_INIT, kv[0][0])):
        accs = by_seed(rs, clean)
        v = np.array(list(accs.values()))
        name = f"{method}, {'pretrained' if init != RANDOM_INIT else 'random init'}"
        eps_text = ", ".join(sorted({f"{e:g}" for e in (epsilon(r) for r in rs) if e is not None})) or "–"
        spread = f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else (f"{v.mean():.2f}" if len(v) else "–")
        lines.append(f"| {name} | {eps_text} | {len(v)} | {sum(r['status'] == records.DIVERGED for r in rs)} | {spread} | "
                     + ", ".join(f"{s}: {a:.2f}" for s, a in sorted(accs.items())) + " |")

    primary = [(m, paired(by_seed(arms[(m, model)], clean), by_seed(base, clean))) for m in PRIMARY if (m, model) in arms]
    adjusted = holm([t["p"] for _, t in primary]) if primary else []
    lines += ["", f"## Primary: clean best dev accuracy, each method against the baseline (Holm over {len(primary)})", "",
              "| comparison | n | mean Δ | 95 % interval | 97.5 % interval (Bonferroni) | p (paired t, two-sided) "
              "| Holm-adjusted p | verdict at α = 0.05 |", "|---|---|---|---|---|---|---|---|"]
    for (m, t), p_adj in zip(primary, adjusted):
        lines.append(f"| {m} − baseline | {t['n']} | {fmt(t['mean'])} | {interval(t['ci95'])} | {interval(t['ci975'])} "
                     f"| {t['p']:.3g} | {p_adj:.3g} | {verdict(t['mean'], p_adj)} |")
    lines += ["", "A method \"helps\" only if its Holm-adjusted test rejects and its mean difference is positive "
                  "(PLAN.md); otherwise the finding is no detectable difference (or a detectable harm)."]

    if eps:
        lines += ["", "## Secondary (uncorrected): under attack, each method against the baseline", "",
                  "Accuracy under attack of the best-dev weights on the attacked dev examples (PGD, eps relative to "
                  "each run's own mean token-embedding norm; docs/attack.md).", "",
                  "| comparison | " + " | ".join(f"ε={e}: mean Δ [95 %] (n)" for e in eps) + " |",
                  "|---|" + "---|" * len(eps)]
        for m in PRIMARY:
            if (m, model) not in arms:
                continue
            cells = [paired(by_seed(arms[(m, model)], robust_at(e)), by_seed(base, robust_at(e))) for e in eps]
            lines.append(f"| {m} − baseline | " + " | ".join(f"{fmt(t['mean'])} {interval(t['ci95'])} ({t['n']})" for t in cells) + " |")

    if ("baseline", RANDOM_INIT) in arms:
        scratch = arms[("baseline", RANDOM_INIT)]
        lines += ["", "## Secondary (uncorrected): what the pretraining buys (baseline, pretrained − random init)", "",
                  "| metric | n | mean Δ | 95 % interval | p (paired t) |", "|---|---|---|---|---|"]
        for label, value in [("clean best dev accuracy", clean)] + [(f"under attack, ε={e}", robust_at(e)) for e in eps]:
            t = paired(by_seed(base, value), by_seed(scratch, value))
            lines.append(f"| {label} | {t['n']} | {fmt(t['mean'])} | {interval(t['ci95'])} | {t['p']:.3g} |")
    return "\n".join(lines) + "\n"
