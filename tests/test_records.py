"""Run identity: which config keys make two runs different, and atomic record files."""

import json

from omegaconf import OmegaConf

from experiments import records
from experiments.config import compose


def resolved(*overrides):
    return OmegaConf.to_container(compose(list(overrides)), resolve=True)


def test_paths_and_display_keys_do_not_change_a_run():
    a = resolved("model=tiny", "paths.results_dir=/x", "trainer.progress=true", "trainer.resume=true")
    b = resolved("model=tiny", "paths.results_dir=/y", "paths.clue_dir=/z")
    assert records.settings(a) == records.settings(b)
    assert records.record_path("/r", a).name == records.record_path("/r", b).name


def test_seed_changes_the_file_but_not_the_settings_id():
    a, b = resolved("seed=1"), resolved("seed=2")
    assert records.settings_id(a) == records.settings_id(b)
    assert records.record_path("/r", a) != records.record_path("/r", b)
    assert records.record_path("/r", a).name.startswith("tnews_bert_base_baseline_seed1_")


def test_results_changing_keys_change_the_settings_id():
    base = records.settings_id(resolved("method=fgm"))
    for override in (
        "method.epsilon=0.1",
        "trainer.learning_rate=3e-5",
        "trainer.epochs=2",
        "task.max_train_samples=100",
        "model=tiny",
        "method.attack_dropout=true",
    ):
        assert records.settings_id(resolved("method=fgm", override)) != base, override


def test_an_unused_method_option_does_not_split_runs():
    # One sweep sets method.epsilon for every method: the baseline ignores it.
    plain = resolved("method=baseline")
    with_eps = resolved("method=baseline", "method.epsilon=0.05")
    assert records.settings(with_eps) == records.settings(plain)
    assert records.settings(with_eps)["method"] == {"name": "baseline"}
    assert records.settings(resolved("method=fgm", "method.epsilon=0.05"))["method"] == {
        "name": "fgm",
        "epsilon": 0.05,
        "accumulate_clean": False,
        "attack_dropout": False,
    }


def test_fgm_attack_dropout_follows_accumulate_clean_unless_set():
    # The blog's code takes the attack gradient with dropout off; with accumulate_clean the
    # clean pass is the update's, so its attack runs with dropout on (configs/method/fgm.yaml).
    def options(*overrides):
        return records.settings(resolved("method=fgm", *overrides))["method"]

    assert options()["attack_dropout"] is False
    assert options("method.accumulate_clean=true")["attack_dropout"] is True
    assert options("method.attack_dropout=true") == {
        "name": "fgm",
        "epsilon": 0.5,
        "accumulate_clean": False,
        "attack_dropout": True,
    }


def test_only_complete_records_are_loaded(tmp_path):
    runs = tmp_path / "runs"
    records.write_json_atomic(runs / "a.json", {"status": "complete", "seed": 0})
    (runs / "b.json").write_text('{"status": "comp')  # cut off mid-write by a crash
    (runs / "c.json").write_text(json.dumps({"status": "running"}))
    assert records.load_records(tmp_path) == [{"status": "complete", "seed": 0}]
    assert sorted(p.name for p in runs.iterdir()) == ["a.json", "b.json", "c.json"]  # no temp files left
    assert (runs / "a.json").stat().st_mode & 0o777 == 0o666 & ~records._UMASK  # readable by others too


def test_warmup_ratio_is_a_setting_only_under_the_linear_schedule():
    from experiments import records as rec

    def config(schedule, warmup):
        return {
            "task": {"name": "tnews"},
            "model": {"name": "tiny"},
            "method": {"name": "fgm", "epsilon": 0.1},
            "seed": 0,
            "trainer": {"schedule": schedule, "warmup_ratio": warmup, "epochs": 2},
        }

    constant, linear = rec.settings(config("constant", 0.1)), rec.settings(config("linear", 0.1))
    assert constant["trainer"] == {"schedule": "constant", "epochs": 2}
    assert linear["trainer"] == {"schedule": "linear", "warmup_ratio": 0.1, "epochs": 2}
    assert rec.settings_id(config("constant", 0.1)) == rec.settings_id(config("constant", 0.3))
    assert rec.settings_id(config("linear", 0.1)) != rec.settings_id(config("linear", 0.3))


def test_a_study_table_is_not_a_setting_the_values_it_sets_are():  # in the layout of records before 2026-12
    from experiments import records as rec

    def config(fgm_eps):
        return {
            "task": {"name": "tnews"},
            "model": {"name": "tiny"},
            "seed": 0,
            "study": {"name": "s", "epsilon": {"baseline": None, "fgm": fgm_eps}},
            "method": {"name": "baseline", "epsilon": None, "unused": ["epsilon"]},
        }

    # The baseline's settings do not change when the study's FGM epsilon is chosen later.
    assert rec.settings_id(config(None)) == rec.settings_id(config(0.03))
    assert "study" not in rec.settings(config(0.03))
