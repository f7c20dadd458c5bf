"""Shared fixtures: a small CLUE-format folder per test and Hydra configs composed as the entry
point composes them (the functions behind them live in tests/helpers/clue.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

import experiments  # noqa: F401  (TF_KERAS before TensorFlow)
from experiments.config import compose
from tests.helpers.clue import make_clue, tiny_overrides


@pytest.fixture
def clue_dir(tmp_path) -> Path:
    return make_clue(tmp_path / "clue")


@pytest.fixture
def tiny_cfg(clue_dir, tmp_path):
    def make(task="tnews", method="baseline", extra=None):
        return compose(tiny_overrides(clue_dir, tmp_path / "results", task, method, extra))

    return make
