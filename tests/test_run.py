"""End to end: the entry point trains each method on a small learnable CLUE folder and
writes a complete record; bad settings fail with one line."""

import json
import os
import subprocess
import sys

import pytest

from experiments import PROJECT_ROOT, records
from experiments.commands.run import run
from experiments.config import compose
from tests.helpers.clue import CLASS_WORDS, tiny_overrides

RECORD_KEYS = {
    "status",
    "task",
    "model",
    "method",
    "seed",
    "settings_id",
    "best_dev_acc",
    "best_epoch",
    "final_dev_acc",
    "history",
    "num_labels",
    "train_samples",
    "dev_samples",
    "timings",
    "settings",
    "config",
    "environment",
    "hydra_dir",
    "finished_at",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "task,method,extra",
    [
        ("tnews", "baseline", {}),
        ("iflytek", "fgm", {"method.epsilon": 0.05}),
        ("tnews", "gp", {"method.epsilon": 0.05}),
    ],
)
def test_each_method_learns_and_writes_its_record(clue_dir, tmp_path, task, method, extra):
    cfg = compose(tiny_overrides(clue_dir, tmp_path / "results", task, method, extra))
    record = run(cfg)
    [path] = (tmp_path / "results" / "runs").glob("*.json")
    assert json.loads(path.read_text()) == json.loads(json.dumps(record, default=str))
    assert RECORD_KEYS <= set(record)
    assert (record["task"], record["method"], record["model"], record["seed"]) == (task, method, "tiny", 0)
    assert [h["epoch"] for h in record["history"]] == [1, 2, 3]
    assert record["final_dev_acc"] == record["history"][-1]["dev_acc"]
    assert record["best_dev_acc"] == max(h["dev_acc"] for h in record["history"])
    chance = 1 / len(CLASS_WORDS)
    assert record["best_dev_acc"] > chance + 0.3, record["history"]
    assert record["config"]["method"].get("epsilon") == extra.get("method.epsilon")
    assert record["environment"]["packages"]["bert4keras"] == "0.11.5"


@pytest.mark.slow
def test_skip_completed_returns_the_existing_record(clue_dir, tmp_path):
    overrides = tiny_overrides(clue_dir, tmp_path / "r", extra={"trainer.epochs": 1})
    first = run(compose(overrides))
    path = records.record_path(tmp_path / "r", first["config"])
    mtime = path.stat().st_mtime_ns
    again = run(compose(overrides + ["trainer.skip_completed=true"]))
    assert again["finished_at"] == first["finished_at"] and path.stat().st_mtime_ns == mtime


def cli(*overrides, cwd=PROJECT_ROOT):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-m", "experiments.commands.run", *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_command_line_run_writes_record(clue_dir, tmp_path):
    out = cli(*tiny_overrides(clue_dir, tmp_path / "results", "iflytek", "baseline", {"trainer.epochs": 1}))
    assert out.returncode == 0, out.stderr[-2000:]
    [record] = records.load_records(tmp_path / "results")
    assert record["task"] == "iflytek" and record["hydra_dir"].startswith(str(tmp_path / "results" / "logs"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "override,message",
    [
        ("trainer.batch_size=0", "trainer.batch_size=0 is invalid: it must be a positive integer"),
        ("trainer.learning_rate=-1", "trainer.learning_rate=-1 is invalid: it must be a positive number"),
        ("method=fgm method.epsilon=-0.5", "method.epsilon=-0.5 is invalid"),
        ("task.max_length=100 model.shape.max_position_embeddings=64", "task.max_length=100 is above the model's"),
        ("method=baseline,nosuch", "unknown method 'nosuch' in 'method=baseline,nosuch'; choose from baseline, fgm,"),
    ],
)
def test_bad_settings_fail_with_one_line(clue_dir, tmp_path, override, message):
    out = cli(*tiny_overrides(clue_dir, tmp_path / "results"), *override.split())
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, out.stderr[-1000:]
    assert "Traceback" not in out.stderr
