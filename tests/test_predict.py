"""Test-set predictions: the CLUE submission format, from the best-dev weights."""

import json
import subprocess
import sys

import numpy as np
import pytest

from experiments import PROJECT_ROOT
from experiments.commands import predict
from experiments.commands.run import run
from experiments.config import compose
from experiments.data import batching, loaders
from experiments.errors import UserError
from tests.helpers.clue import tiny_overrides


@pytest.fixture(scope="module")
def tnews_run(tmp_path_factory):
    from tests.helpers.clue import make_clue

    root = tmp_path_factory.mktemp("predict")
    clue = make_clue(root / "clue")
    record = run(compose(tiny_overrides(clue, root / "results")))
    [record_file] = (root / "results" / "runs").glob("*.json")
    return clue, record_file, record


def read_lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
def test_tnews_files_have_ids_count_and_label_set(tnews_run, tmp_path):
    clue, record_file, record = tnews_run
    written = predict.predict(record_file, task="tnews", out=tmp_path)
    assert [p.name for p in written] == ["tnews11_predict.json", "tnews10_predict.json"]
    labels = set(loaders.read_label_ids(clue / "tnews_public" / "labels.json"))
    for path in written:
        rows = read_lines(path)
        assert [r["id"] for r in rows] == list(range(50))  # the fixture's test files hold ids 0..49
        assert all(set(r) == {"id", "label"} for r in rows)
        assert {r["label"] for r in rows} <= labels and len({r["label"] for r in rows}) > 1


@pytest.mark.slow
def test_predictions_come_from_the_best_dev_weights(tnews_run):
    clue, record_file, record = tnews_run
    cfg, label_ids, tokenizer, trainer = predict.load_run(record)
    _, _, dev = loaders.load_task(cfg.paths.clue_dir, cfg.task)
    classes = trainer.predict(*batching.encode(tokenizer, dev.texts, cfg.task.max_length))
    assert float(np.mean(classes == dev.labels)) == record["best_dev_acc"]


@pytest.mark.slow
def test_run_folder_and_wrong_task(tnews_run, tmp_path):
    clue, record_file, record = tnews_run
    with pytest.raises(UserError, match="a tnews run, not iflytek"):
        predict.predict(record_file, task="iflytek", out=tmp_path)
    with pytest.raises(UserError, match="no complete run record there"):
        predict.predict(tmp_path / "missing.json")


@pytest.mark.slow
def test_make_predict_on_a_tiny_run(tnews_run, tmp_path):
    clue, record_file, record = tnews_run
    out = subprocess.run(
        ["make", "-s", "-o", ".venv/.synced", "predict", f"RUN={record_file}", "TASK=tnews", f"PY={sys.executable}"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    folder = record_file.parents[1] / "predictions" / record_file.stem
    assert len(read_lines(folder / "tnews10_predict.json")) == 50
    assert "tnews11_predict.json: 50 predictions" in out.stdout
