"""How the report writes numbers and tables: one markdown table writer and the cells every table shares.

table.md, its robustness and sweep sections, and a study's tuning.md and analysis.md all spell a
mean, an interval and a paired difference through these functions, so that one number reads the
same everywhere. Accuracies are in %, differences in points, two decimals.
"""

from __future__ import annotations

import pandas as pd

MISSING = "–"  # a number that does not exist (no run, an interval of fewer than two values)


def md_table(df: pd.DataFrame) -> str:
    """A DataFrame as a markdown table: its columns as the header, every cell as ``str`` of its value."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)])


def pct(x) -> str:
    """An accuracy in %, or "" (an empty cell) when there is none."""
    return "" if pd.isna(x) else f"{x:.2f}"


def number(x, sign: bool = False) -> str:
    """A number (signed: a difference), or "–" when there is none."""
    return MISSING if pd.isna(x) else (f"{x:+.2f}" if sign else f"{x:.2f}")


def interval(lo, hi) -> str:
    """``[lo, hi]`` of a difference."""
    return f"[{number(lo, True)}, {number(hi, True)}]"


def seeds(n: int) -> str:
    return f"{n} seed{'s' * (n > 1)}"


def mean_std(mean, std) -> str:
    """``mean ± std``; the mean alone when there is no spread (one value), "–" when there is no value."""
    return number(mean) + ("" if pd.isna(std) else f" ± {std:.2f}")


def mean_cell(mean, std, n: int, note: str = "") -> str:
    """``mean ± std (n=5)`` of a group, ``note`` appended inside the brackets (``, 1 diverged``)."""
    return f"{mean_std(mean, std)} (n={n}{note})"


def paired_cell(delta, lo, hi, n: int, short: bool = False) -> str:
    """``Δ [lo, hi] (n seeds)``: a paired difference over ``n`` shared seeds with its 95 % interval (left out
    when there is none, below two seeds). ``short`` writes ``(n)`` for a column whose header says so."""
    if n == 0:
        return "no shared seeds"
    ci = "" if pd.isna(lo) else f" {interval(lo, hi)}"
    return f"{number(delta, True)}{ci} ({n if short else seeds(n)})"


def column_name(row, several_models: bool) -> str:
    """A group's name in a table's header or first column: method [model] (the settings that tell it apart)."""
    return row.method + (f" [{row.model}]" if several_models else "") + (f" ({row.label})" if row.label else "")
