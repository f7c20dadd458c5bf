"""Settings that classify every config key (experiments/records.py KEYS): every committed record keeps its
settings id, every key of every composed config is classified, a new key at its neutral default changes no id."""

from __future__ import annotations

import copy
import json

import pytest
from omegaconf import OmegaConf

from experiments import CONFIG_DIR, PROJECT_ROOT, records
from experiments.config import compose
from experiments.errors import UserError

RUN_RECORDS = sorted(
    p for folder in ("docs/evidence", "docs/example") for p in (PROJECT_ROOT / folder).glob("**/runs/*.json")
)
PRETRAIN_RECORD = PROJECT_ROOT / "docs" / "evidence" / "tnews-self-pretrained" / "pretrain_record.json"
SHAPE_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def resolved(overrides, config_name="train") -> dict:
    return OmegaConf.to_container(compose(list(overrides), config_name), resolve=True)


def load(path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", RUN_RECORDS, ids=lambda p: str(p.relative_to(PROJECT_ROOT / "docs")))
def test_every_committed_run_record_keeps_its_settings_id(path):
    record = load(path)
    assert records.settings_id(record["config"]) == record["settings_id"]
    assert records.settings(record["config"]) == record["settings"]
    assert path.name.endswith(f"_{record['settings_id']}.json")


def test_the_committed_records_are_many_and_none_is_of_a_released_model():
    assert len(RUN_RECORDS) >= 47
    # A released model's shape (model.shape) is a setting now: such records would change id. There are none.
    assert {load(p)["model"] for p in RUN_RECORDS} == {"tiny"}


def test_the_committed_pretrain_record_keeps_its_id():
    record = load(PRETRAIN_RECORD)
    config = record["config"]
    tasks = [config["task"]]  # pretrain.corpus.tasks null: the command's task=
    assert record["tasks"] == ["tnews"] and config["pretrain"]["corpus"]["tasks"] is None
    assert records.pretrain_id(config, tasks, record["start"]["init"]) == record["id"] == "tnews_tiny_4bc8265991"
    assert records.pretrain_settings(config, tasks, record["start"]["init"]) == record["settings"]


def shape_under_model_shape(config: dict) -> dict:
    """``config`` with tiny's shape keys under ``model.shape`` (the one shape schema of every model config)."""
    new = copy.deepcopy(config)
    model = new["model"]
    model["shape"] = {k: model.pop(k) for k in SHAPE_KEYS}
    return new


@pytest.mark.parametrize("path", RUN_RECORDS[::7], ids=lambda p: p.name)
def test_tiny_shape_under_model_shape_keeps_the_id(path):
    config = load(path)["config"]
    moved = shape_under_model_shape(config)
    assert "hidden_size" not in moved["model"]
    assert records.settings_id(moved) == records.settings_id(config)


def test_the_pretrain_id_is_the_same_with_the_shape_under_model_shape():
    record = load(PRETRAIN_RECORD)
    config = shape_under_model_shape(record["config"])
    assert records.pretrain_id(config, [config["task"]], record["start"]["init"]) == record["id"]


def test_a_new_setting_at_its_neutral_default_changes_no_committed_id(monkeypatch):
    # Tried: a new trainer key whose default reproduces the old behaviour.
    monkeypatch.setitem(records.KEYS, "trainer.some_new_flag", (records.Setting(neutral=False), None))
    changed = 0
    for path in RUN_RECORDS:
        record = load(path)
        config = copy.deepcopy(record["config"])
        config["trainer"]["some_new_flag"] = False
        assert records.settings_id(config) == record["settings_id"], path
        config["trainer"]["some_new_flag"] = True  # away from the default it is a setting like any other
        changed += records.settings_id(config) != record["settings_id"]
        assert records.settings(config)["trainer"]["some_new_flag"] is True
    assert changed == len(RUN_RECORDS)


def test_an_unclassified_key_is_refused_in_one_line():
    config = resolved(["model=tiny"])
    config["trainer"]["some_new_flag"] = False
    assert records.unclassified(config) == ["trainer.some_new_flag"]
    with pytest.raises(UserError, match=r"trainer\.some_new_flag: not classified .* experiments/records.py KEYS"):
        records.settings_id(config)
    config = resolved(["model=tiny"])
    config["method"]["name"] = "mine"
    assert records.unclassified(config) == ["method.name=mine (its options: records.METHODS and Setting(methods=...))"]


def composed_configs():
    """(name, overrides, config name, column) for every group option of train.yaml and pretraining.yaml, and
    every study with every method of its grid."""
    for group in ("task", "method", "model", "trainer", "paths", "download", "eval"):
        for option in options(group):
            yield f"train {group}={option}", ["model=tiny", f"{group}={option}"], "train", records.RUN
    for experiment in options("experiment"):  # with each method of its grid
        grid = OmegaConf.load(CONFIG_DIR / "experiment" / f"{experiment}.yaml").hydra.sweeper.params
        for method in str(grid.method).split(","):
            yield (
                f"experiment={experiment} method={method}",
                [f"experiment={experiment}", f"method={method}"],
                "train",
                records.RUN,
            )
    for group in ("task", "model", "pretrain", "paths", "download"):
        for option in options(group):
            yield f"pretraining {group}={option}", [f"{group}={option}"], "pretraining", records.PRETRAIN


@pytest.mark.parametrize(
    "name, overrides, config_name, column",
    list(composed_configs()),
    ids=lambda x: x if isinstance(x, str) and "=" in x else "",
)
def test_every_key_of_every_composed_config_is_classified(name, overrides, config_name, column):
    config = resolved(overrides, config_name)
    assert records.unclassified(config, column) == []
    if column == records.PRETRAIN:
        settings = records.pretrain_settings(config, [config["task"]], "random")
        assert set(settings) == {"tasks", "model", "pretrain", "seed", "init"}
    else:
        assert "seed" in records.settings(config)


def test_every_group_option_exists():
    # The grid above covers each of these folders; a new group needs a line there.
    groups = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()}
    assert groups == {
        "task",
        "method",
        "model",
        "trainer",
        "paths",
        "download",
        "eval",
        "experiment",
        "pretrain",
        "hydra",
    }
    assert set(options("method")) == set(records.METHODS)


def test_a_method_option_is_a_keyword_argument_of_its_class():
    from hydra.utils import get_class

    from experiments.train import methods

    for name in options("method"):
        config = resolved([f"method={name}"])
        cls = get_class(config["method"]["_target_"])
        declared = {
            key.split(".", 1)[1]
            for key, (run, _) in records.KEYS.items()
            if isinstance(run, records.Setting) and name in run.methods
        }
        assert set(methods.options(cls)) == declared, name
        assert set(records.settings(config)["method"]) == {"name", *declared}, name


def test_a_sweep_setting_epsilon_for_every_method_does_not_split_the_baseline():
    plain = resolved(["method=baseline"])
    assert records.settings(plain)["method"] == {"name": "baseline"}
    for eps in ("0.05", "null"):
        assert records.settings_id(resolved(["method=baseline", f"method.epsilon={eps}"])) == records.settings_id(plain)
        assert records.settings_id(resolved(["method=freelb", f"method.epsilon={eps}"])) == records.settings_id(
            resolved(["method=freelb"])
        )
    # The study's grid sets method.epsilon from its per-method table, null for the baseline.
    study = [resolved(["experiment=tnews_self_pretrained", f"method={m}"]) for m in ("baseline", "fgm")]
    assert study[0]["method"]["epsilon"] is None and study[1]["method"]["epsilon"] == 0.03
    tune = [
        resolved(["experiment=tnews_self_pretrained_tune", "method=baseline", f"method.epsilon={e}"])
        for e in (0.01, 0.03, 0.1)
    ]
    assert len({records.settings_id(c) for c in tune}) == 1
    assert records.settings_id(resolved(["method=fgm", "method.epsilon=0.1"])) != records.settings_id(
        resolved(["method=fgm", "method.epsilon=0.2"])
    )


def test_tiny_takes_the_tuned_epsilon_and_the_table_of_it_is_no_setting():
    fgm, gp = resolved(["model=tiny", "method=fgm"]), resolved(["model=tiny", "method=gp"])
    assert (fgm["method"]["epsilon"], gp["method"]["epsilon"]) == (0.03, 0.1)
    assert (resolved(["method=fgm"])["method"]["epsilon"], resolved(["method=gp"])["method"]["epsilon"]) == (0.5, 1.0)
    assert "method_epsilon" not in records.settings(fgm)["model"]
    # The same run as one that gives the value by hand, before the model carried it.
    explicit = resolved(["model=tiny", "method=fgm", "method.epsilon=0.03"])
    del explicit["model"]["method_epsilon"]
    assert records.settings_id(explicit) == records.settings_id(fgm)
    assert records.settings_id(resolved(["model=tiny", "method=fgm", "method.epsilon=0.5"])) != records.settings_id(fgm)


def test_warmup_ratio_counts_only_under_the_linear_schedule():
    constant = [resolved(["model=tiny", f"trainer.warmup_ratio={w}"]) for w in (0.1, 0.3)]
    linear = [resolved(["model=tiny", "trainer.schedule=linear", f"trainer.warmup_ratio={w}"]) for w in (0.1, 0.3)]
    assert records.settings_id(constant[0]) == records.settings_id(constant[1])
    assert records.settings_id(linear[0]) != records.settings_id(linear[1])
    assert records.settings(linear[0])["trainer"]["warmup_ratio"] == 0.1
    assert "warmup_ratio" not in records.settings(constant[0])["trainer"]


def test_a_released_models_shape_is_a_setting_beside_its_name():
    config = resolved(["model=bert_base"])
    model = records.settings(config)["model"]
    assert model == {
        "name": "bert_base",
        "family": "bert",
        "learning_rate": 2e-5,
        "vocab_size": 21128,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 512,
    }
