"""The character-level text attack (experiments/train/text_attack.py, make attack, eval.text_attack): values on a
tiny model trained on a fixture where one character decides the label.

The fixture: titles of 10-16 characters drawn from a pool of common characters; class "101" titles hold
球 somewhere, class "100" titles do not. 求 (qiú, as 球) is in the pool of both classes, so the model's
vocabulary has a homophone of 球 that says nothing about the class. A fifth of the dev labels are
flipped, so that some examples are misclassified."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from experiments import config as project_config
from experiments.commands import attack as make_attack
from experiments.commands.predict import load_run
from experiments.commands.run import run
from experiments.data import loaders
from experiments.data.char_candidates import CandidateTable
from experiments.errors import UserError
from experiments.train import text_attack
from experiments.train.text_attack import TextAttack, max_changes

POOL = "今天我们一起看看这个新闻的内容非常有意思大家都在讨论求"
LABELS = ["100", "101"]
DECIDES = "球"


def title(rnd: random.Random, label: int) -> str:
    chars = [rnd.choice(POOL) for _ in range(rnd.randint(10, 15))]
    if label:
        chars.insert(rnd.randint(0, len(chars)), DECIDES)
    return "".join(chars)


def write_split(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def one_char_clue(root: Path, n_train=300, n_dev=60, seed=0) -> Path:
    rnd = random.Random(seed)
    folder = root / "tnews_public"
    write_split(folder / "labels.json", [{"label": i, "label_desc": f"class{i}"} for i in LABELS])
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = []
        for k in range(n):
            label = rnd.randrange(2)
            shown = 1 - label if split == "dev" and k % 5 == 4 else label  # every fifth dev label is wrong
            rows.append(
                {
                    "label": LABELS[shown],
                    "label_desc": f"class{LABELS[shown]}",
                    "sentence": title(rnd, label),
                    "keywords": "",
                }
            )
        write_split(folder / f"{split}.json", rows)
    write_split(folder / "test.json", [{"id": 0, "sentence": title(rnd, 0)}])
    return root


def overrides(clue: Path, results: Path, extra: dict | None = None) -> list[str]:
    base = {
        "task": "tnews",
        "method": "baseline",
        "model": "tiny",
        "paths.clue_dir": str(clue),
        "paths.results_dir": str(results),
        "task.num_labels": 2,
        "trainer.epochs": 3,
        "trainer.batch_size": 16,
        "trainer.learning_rate": 2e-3,
        "model.shape.hidden_size": 64,
        "model.shape.intermediate_size": 128,
        "model.shape.max_position_embeddings": 64,
        "task.max_length": 32,
        "trainer.progress": False,
        "download.auto": False,
        "paths.cache_dir": str(results / "token-cache"),
        "eval.text_attack.enabled": True,
        "eval.text_attack.max_samples": None,
    }
    base.update(extra or {})
    return [f"{k}={'null' if v is None else v}" for k, v in base.items()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained (and text-attacked after training) on the fixture; its record file and record."""
    root = tmp_path_factory.mktemp("text-attack")
    clue = one_char_clue(root / "clue")
    record = run(project_config.compose(overrides(clue, root / "results")))
    files = list((root / "results" / "runs").glob("*.json"))
    assert len(files) == 1 and record["best_dev_acc"] >= 0.75  # 0.8 is every right label
    return files[0], record


@pytest.fixture(scope="module")
def loaded(trained):
    cfg, label_ids, tokenizer, trainer = load_run(trained[1])
    _, _, dev = loaders.load_task(cfg.paths.clue_dir, cfg.task)
    return cfg, label_ids, tokenizer, trainer.model, dev


def attack_of(loaded, budget=0.1, max_queries=500, sources=("homophone", "visual", "traditional"), seed=0):
    cfg, _, tokenizer, model, _ = loaded
    table = CandidateTable(sources, text_attack.vocabulary_filter(tokenizer))
    return TextAttack(model, tokenizer, table, cfg.task.max_length, budget, max_queries, batch_size=16, seed=seed)


@pytest.mark.slow
def test_every_candidate_is_one_known_token(loaded):
    tokenizer = loaded[2]
    vocab = set(tokenizer._token_dict)
    table = CandidateTable(("homophone", "visual", "traditional"), text_attack.vocabulary_filter(tokenizer))
    found = {c for ch in POOL + DECIDES for c, _ in table(ch)}
    assert "求" in found and "球" in found and found <= vocab and "囚" not in vocab


def rows_of(loaded, **kw):
    _, label_ids, _, _, dev = loaded
    return text_attack.run(attack_of(loaded, **kw), dev.texts, dev.labels, label_ids)


@pytest.fixture(scope="module")
def default(loaded):
    """The attack with the default settings (budget 0.1, 500 queries, every source, seed 0) on the dev set."""
    return rows_of(loaded)


def test_max_changes_is_the_floored_share_at_least_one():
    assert [max_changes(0.1, n) for n in (0, 1, 9, 10, 19, 20, 29, 30, 31)] == [0, 1, 1, 1, 1, 2, 2, 3, 3]
    assert [max_changes(0.0, n) for n in (5, 50)] == [0, 0]
    assert max_changes(0.25, 8) == 2 and max_changes(1.0, 7) == 7


@pytest.mark.slow
def test_the_attack_finds_the_deciding_character_and_random_flips_fewer(default):
    result = default
    rows = result.rows
    deciding = [r for r in rows if r["status"] != "misclassified" and r["label"] == "101"]
    assert len(deciding) >= 10
    for r in deciding:  # every class-101 title it got right: 球 replaced, the label flips
        assert r["status"] == "success", r
        assert [s["from"] for s in r["substitutions"]] == [DECIDES]
        assert DECIDES not in r["adversarial_text"] and r["prediction"] == "100"
    s = result.summary
    assert s["success_rate"] > s["random"]["success_rate"]
    assert s["acc"] < s["random"]["acc"]
    # The numbers are those of the rows.
    attacked = [r for r in rows if r["status"] != "misclassified"]
    assert s["clean_acc"] == len(attacked) / len(rows)
    assert s["acc"] == sum(r["status"] in ("failed", "no_candidates") for r in rows) / len(rows)
    assert s["success_rate"] == sum(r["status"] == "success" for r in attacked) / len(attacked)
    assert s["queries_mean"] == pytest.approx(np.mean([r["queries"] for r in attacked]))
    assert s["changed_share_mean"] == pytest.approx(
        np.mean([len(r["positions"]) / r["characters_seen"] for r in attacked])
    )


@pytest.mark.slow
def test_no_text_changes_more_than_the_budget_nor_asks_more_than_the_cap(loaded, default):
    for budget, cap in ((0.1, 500), (0.3, 500), (0.3, 4)):
        result = default if (budget, cap) == (0.1, 500) else rows_of(loaded, budget=budget, max_queries=cap)
        for r in result.rows:
            changed = [i for i, (a, b) in enumerate(zip(r["text"], r["adversarial_text"])) if a != b]
            assert changed == sorted(r["positions"]) and len(changed) <= r["max_changes"]
            assert r["max_changes"] == max_changes(budget, r["characters_seen"])
            assert r["characters_seen"] == len(r["text"])  # short titles: nothing truncated, no spaces
            assert r["queries"] <= cap
            if "random" in r:
                assert len(r["random"]["positions"]) <= r["max_changes"]


@pytest.mark.slow
def test_a_misclassified_example_is_never_attacked_and_budget_zero_is_clean_accuracy(loaded, default):
    cfg, label_ids, tokenizer, model, dev = loaded
    predicted = text_attack.predict(model, tokenizer, dev.texts, cfg.task.max_length)
    result = rows_of(loaded, budget=0.0)
    wrong = predicted != dev.labels
    assert 0.1 < wrong.mean() < 0.4
    for r, w, p in zip(result.rows, wrong, predicted):
        assert r["clean_prediction"] == label_ids[p]
        if w:
            assert r["status"] == "misclassified" and r["queries"] == 1 and r["adversarial_text"] == r["text"]
        assert r["adversarial_text"] == r["text"] and r["substitutions"] == []
    assert result.summary["acc"] == result.summary["clean_acc"] == 1 - wrong.mean()
    assert [r["status"] == "misclassified" for r in default.rows] == list(wrong)


@pytest.mark.slow
def test_the_same_seed_gives_the_same_texts_and_the_weights_are_untouched(trained, loaded, default):
    model = loaded[3]
    first, again, other = default.rows, rows_of(loaded, seed=0).rows, rows_of(loaded, seed=4).rows
    assert first == again
    assert [r["adversarial_text"] for r in first] == [r["adversarial_text"] for r in other]  # greedy: no draws
    assert [r.get("random") for r in first] != [r.get("random") for r in other]
    fresh = load_run(trained[1])[3].model  # the best weights as the file has them, after every attack above
    assert len(model.get_weights()) == len(fresh.get_weights())
    for a, b in zip(fresh.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_sources_switch_and_the_record_says_what_ran(trained, loaded, default):
    record_file, record = trained
    text = record["text_attack"]
    assert text["sources"] == ["homophone", "visual", "traditional"] and text["budget"] == 0.1
    assert (
        text["examples"] == 60
        and text["weights"] == "best"
        and set(text["packages"]) == {"pypinyin", "pycorrector", "opencc"}
    )
    rows = [json.loads(line) for line in record_file.with_suffix(".text_attack.jsonl").read_text("utf-8").splitlines()]
    assert len(rows) == 60 and rows == json.loads(json.dumps(default.rows))  # the run's and a new one agree
    for r in rows_of(loaded, sources=("visual",)).rows:
        assert all(s["source"] == "visual" for s in r["substitutions"])


@pytest.mark.slow
def test_transfer_scores_the_jsonl_texts(trained, loaded):
    record_file, record = trained
    cfg, label_ids, tokenizer, model, dev = loaded
    fields = text_attack.transfer_fields(model, tokenizer, record_file, cfg.task.max_length, dev.texts, label_ids)
    rows = [json.loads(line) for line in record_file.with_suffix(".text_attack.jsonl").read_text("utf-8").splitlines()]
    labels = np.array([label_ids.index(r["label"]) for r in rows])
    direct = text_attack.predict(model, tokenizer, [r["adversarial_text"] for r in rows], cfg.task.max_length)
    assert fields["acc"] == np.mean(direct == labels) == record["text_attack"]["acc"]
    assert fields["transfer_rate"] == 1.0  # on itself every success transfers


@pytest.mark.slow
def test_make_attack_takes_text_attack_transfer_and_paths(trained, tmp_path):
    record_file, record = trained
    # A copy of the run "made elsewhere": its record and weights moved, its data found through paths.*.
    moved = tmp_path / "moved"
    (moved / "runs").mkdir(parents=True)
    (moved / "checkpoints" / record_file.stem).mkdir(parents=True)
    weights = Path(record["best_weights"])
    (moved / "checkpoints" / record_file.stem / weights.name).write_bytes(weights.read_bytes())
    clue = Path(record["config"]["paths"]["clue_dir"])
    elsewhere = {
        **record,
        "best_weights": "/nowhere/results/checkpoints/x/best.weights.h5",
        "config": {**record["config"], "paths": {**record["config"]["paths"], "clue_dir": "/nowhere/clue"}},
    }
    copy = moved / "runs" / record_file.name
    copy.write_text(json.dumps(elsewhere), encoding="utf-8")
    fields = make_attack.attack(
        copy,
        [
            f"paths.clue_dir={clue}",
            "eval.text_attack.enabled=true",
            "eval.text_attack.budget=0.0",
            f"eval.text_attack.from={record_file}",
        ],
    )
    assert set(fields) == {"text_attack", "text_attack_transfer"}
    assert fields["text_attack"]["acc"] == fields["text_attack"]["clean_acc"] == record["text_attack"]["clean_acc"]
    assert fields["text_attack_transfer"][record_file.stem]["acc"] == record["text_attack"]["acc"]
    written = json.loads(copy.read_text("utf-8"))
    assert written["text_attack"] == json.loads(json.dumps(fields["text_attack"]))
    assert written["config"] == elsewhere["config"]  # paths change no result and are not kept
    assert copy.with_suffix(".text_attack.jsonl").is_file()


@pytest.mark.slow
def test_make_attack_refuses_other_keys_and_bad_settings(trained):
    record_file, _ = trained
    for bad in (
        ["task.max_length=8"],
        ["eval.text_attack.budget=2"],
        ["eval.text_attack.sources=[sound]"],
        ["eval.text_attack.max_queries=0"],
    ):
        with pytest.raises(UserError):
            make_attack.attack_config(json.loads(record_file.read_text("utf-8")), bad)
    record = json.loads(record_file.read_text("utf-8"))
    assert record["config"]["eval"]["text_attack"]["enabled"]  # the run attacked after training
    cfg = make_attack.attack_config(record, ["eval.text_attack.enabled=true"])
    assert list(cfg.attack.epsilons) == [] and cfg.text_attack.enabled and cfg.text_attack["from"] is None
    cfg = make_attack.attack_config(record, ["eval.text_attack.from=x.json", "eval.text_attack.budget=0.2"])
    assert not cfg.text_attack.enabled and cfg.text_attack["from"] == "x.json" and cfg.text_attack.budget == 0.2
    cfg = make_attack.attack_config(record, ["eval.attack.epsilons=[0.1]"])
    assert list(cfg.attack.epsilons) == [0.1] and not cfg.text_attack.enabled and cfg.text_attack["from"] is None
    assert OmegaConf.to_container(cfg.text_attack)["sources"] == ["homophone", "visual", "traditional"]


def test_paths_overrides_move_the_folders_the_record_names(tmp_path):
    record = {
        "best_weights": "results/old/checkpoints/r/best.weights.h5",
        "config": {
            "paths": {"models_dir": "/old/data/models", "results_dir": "results/old", "clue_dir": "c"},
            "model": {"checkpoint_dir": "/old/data/models/pretrained/x", "name": "tiny"},
        },
    }
    moved = make_attack.with_paths(
        tmp_path / "runs" / "r.json",
        record,
        ["paths.models_dir=/new/models", "paths.results_dir=/new/res", "paths.clue_dir=d"],
    )
    assert moved["config"]["paths"] == {"models_dir": "/new/models", "results_dir": "/new/res", "clue_dir": "d"}
    assert moved["config"]["model"] == {"checkpoint_dir": "/new/models/pretrained/x", "name": "tiny"}
    assert moved["best_weights"] == "/new/res/checkpoints/r/best.weights.h5"
    assert record["config"]["paths"]["models_dir"] == "/old/data/models"  # the record itself is not changed
    # Without paths.results_dir, weights this machine lacks are looked for beside the record.
    beside = tmp_path / "checkpoints" / "r" / "best.weights.h5"
    beside.parent.mkdir(parents=True)
    beside.write_bytes(b"w")
    assert make_attack.with_paths(tmp_path / "runs" / "r.json", record, [])["best_weights"] == str(beside)
