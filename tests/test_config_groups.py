"""Config groups through Hydra (config.group_options / load_group_option), the one shape schema of
configs/model/, and the one Ctrl-C handler of run and pretrain (errors.reported)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from experiments import CONFIG_DIR, config
from experiments.errors import UserError, reported

SHAPE_KEYS = {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_position_embeddings"}


@pytest.mark.parametrize("group", ["task", "model", "method", "eval", "trainer"])
def test_group_options_are_the_groups_files(group):
    assert config.group_options(group) == sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group,name", [("method", "fgm"), ("task", "iflytek"), ("eval", "default"), ("model", "albert_base_zh")]
)
def test_a_loaded_option_is_what_a_run_composes(group, name):
    loaded = config.load_group_option(group, name)
    composed = config.compose([f"{group}={name}"])[group]
    assert OmegaConf.to_container(loaded) == OmegaConf.to_container(composed)  # interpolations left as written
    assert OmegaConf.to_container(loaded) == OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / group / f"{name}.yaml"))


def test_an_unknown_option_names_the_choices():
    with pytest.raises(UserError, match=r"^unknown task 'wnli'; choose from afqmc, cluewsc2020, cmnli, csl, iflytek,"):
        config.load_group_option("task", "wnli")
    with pytest.raises(UserError, match=r"^unknown method 'nosuch' in 'method=fgm,nosuch'; choose from baseline, fgm,"):
        config.check_choices(["task=tnews", "method=fgm,nosuch", "trainer.epochs=1", "hydra/launcher=joblib"])


def test_the_helpers_work_inside_a_running_hydra_app_and_leave_it_as_it_was():
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):  # as inside @hydra.main
        running = GlobalHydra.instance().hydra
        assert config.load_group_option("task", "tnews").name == "tnews"
        assert GlobalHydra.instance().hydra is running


def test_every_model_gives_its_shape_under_shape_and_nowhere_else():
    for name in config.group_options("model"):
        model = config.load_group_option("model", name)
        assert SHAPE_KEYS <= set(model.shape), name
        assert not (set(model) & (SHAPE_KEYS | {"hidden_dropout_prob", "attention_probs_dropout_prob"})), name


def test_the_tiny_encoder_is_built_from_its_shape():
    from experiments.model import encoder

    model = config.compose(["model=tiny", "model.shape.num_hidden_layers=3"]).model
    assert encoder.bert_config(model, 77) == {
        "vocab_size": 77,
        "hidden_act": "gelu",
        "type_vocab_size": 2,
        "hidden_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "intermediate_size": 512,
        "max_position_embeddings": 512,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
    }
    assert encoder.shape_config(model, layers=1) == {**encoder.bert_config(model, 21128), "num_hidden_layers": 1}


def test_ctrl_c_is_one_line_and_exit_130_only_where_asked(capsys):
    advice = "no record written; rerun with trainer.resume=true"
    with pytest.raises(SystemExit) as stopped, reported(interrupted=advice):
        raise KeyboardInterrupt
    assert stopped.value.code == 130
    assert capsys.readouterr().err == f"interrupted: {advice}\n"
    with pytest.raises(KeyboardInterrupt), reported():
        raise KeyboardInterrupt
