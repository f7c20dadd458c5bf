"""What the table and its pictures compute from records alike: 95 % t-intervals and paired
differences over seeds (how they are written: ``formatting``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from experiments.records import DIVERGED


def ci95(values) -> tuple[float, float]:
    """95% t-interval of the mean of ``values`` (NaN below two values)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return np.nan, np.nan
    if np.ptp(x) == 0:
        return x[0], x[0]
    return tuple(stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x)))


def paired_differences(acc: pd.Series, other: pd.DataFrame) -> pd.Series:
    """``acc`` (best dev accuracy by seed) minus ``other``'s complete runs, over the seeds both have."""
    other = other[other.status != DIVERGED].set_index("seed")["best_dev_acc"]
    return (acc - other).dropna()
