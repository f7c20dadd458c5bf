"""The small learnable CLUE folder most tests train on (``make_clue``), the overrides for a fast tiny
run on it (``tiny_overrides``), and the real data in ../shared where it exists."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared"  # ../shared beside the checkout
SHARED_CLUE = SHARED / "clue"
SHARED_BERT = SHARED / "bert" / "chinese_L-12_H-768_A-12"

# Per class, a word the sentences of that class contain: a tiny model learns it in one epoch.
CLASS_WORDS = ["足球", "股票", "电影", "手机", "旅游", "美食", "汽车", "教育", "军事", "游戏"]
FILLER = "今天我们一起看看这个新闻的内容非常有意思大家都在讨论"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def make_clue(root: Path, n_train: int = 400, n_dev: int = 100, n_test: int = 50, seed: int = 0) -> Path:
    """Write ``tnews_public/`` and ``iflytek_public/`` in the official formats, with
    labels a model can learn (each class's sentences hold that class's word)."""
    rnd = random.Random(seed)
    tnews_ids = [str(i) for i in range(100, 117) if i not in (105, 111)][: len(CLASS_WORDS)]
    iflytek_ids = [str(i) for i in range(len(CLASS_WORDS))]

    def sentence(k):
        a, b = sorted(rnd.sample(range(len(FILLER)), 2))
        return FILLER[:a] + CLASS_WORDS[k] + FILLER[a:b]

    for task, ids, desc in (("tnews", tnews_ids, "label_desc"), ("iflytek", iflytek_ids, "label_des")):
        folder = root / f"{task}_public"
        write_jsonl(folder / "labels.json", [{"label": i, desc: f"class{i}"} for i in ids])
        for split, n in (("train", n_train), ("dev", n_dev)):
            rows = []
            for _ in range(n):
                k = rnd.randrange(len(ids))
                rows.append(
                    {
                        "label": ids[k],
                        desc: f"class{ids[k]}",
                        "sentence": sentence(k),
                        **({"keywords": ""} if task == "tnews" else {}),
                    }
                )
            write_jsonl(folder / f"{split}.json", rows)
        tests = ["test.json", "test1.0.json"] if task == "tnews" else ["test.json"]
        for name in tests:
            write_jsonl(
                folder / name, [{"id": i, "sentence": sentence(rnd.randrange(len(ids)))} for i in range(n_test)]
            )
    # The fixture has 10 classes: the task configs are told so by the overrides below.
    return root


def tiny_overrides(
    clue: Path, results: Path, task: str = "tnews", method: str = "baseline", extra: dict | None = None
) -> list[str]:
    """Overrides for a fast tiny run on a ``make_clue`` folder; ``extra`` adds or replaces keys."""
    base = {
        "task": task,
        "method": method,
        "model": "tiny",
        "paths.clue_dir": str(clue),
        "paths.results_dir": str(results),
        "task.num_labels": len(CLASS_WORDS),
        "trainer.epochs": 3,
        "trainer.batch_size": 16,
        "trainer.learning_rate": 2e-3,
        "model.shape.hidden_size": 64,
        "model.shape.intermediate_size": 128,
        "model.shape.max_position_embeddings": 64,
        "task.max_length": 64,
        "trainer.progress": False,
        "download.auto": False,
        "paths.cache_dir": str(results / "token-cache"),  # not the repo's data/cache
    }
    base.update(extra or {})
    return [f"{k}={v}" for k, v in base.items()]


def requires_shared(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not here (as on a user's machine)")
