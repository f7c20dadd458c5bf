"""The Chinese model family (configs/model/*.yaml): each release's checkpoint layout, written
here by tests/google_checkpoint.py, loads bit for bit through bert4keras; FGM and gradient
penalty on it equal tests/test_methods.py's dense references (on ALBERT's and ELECTRA's
factorised embeddings too); one run per family trains end to end; the missing-file,
wrong-vocab and no-URL mistakes are one-line errors."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from experiments import PROJECT_ROOT, download, models
from experiments.config import compose
from experiments.errors import UserError
from experiments.methods.fgm import FGM
from experiments.methods.gp import GradientPenalty
from experiments.run import run
from tests.conftest import CLASS_WORDS, make_clue, tiny_overrides
from tests.google_checkpoint import RELEASES, UNUSED_PREFIXES, fixture_vocab, write_release
from tests.test_methods import per_position_reference, reference_fgm
from tests.tiny_bert import dense, repeated_token_batch

NO_URL = ["macbert_base", "nezha_base", "electra_base"]
# One release per family for the method and end-to-end tests (the others share its family's code).
BY_FAMILY = {"bert": "macbert_base", "albert": "albert_base_zh", "nezha": "nezha_base", "electra": "electra_base"}
DROPOUT_FREE = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}  # deterministic forward passes


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """Every release's folder under one models_dir, by model config name: (folder, saved arrays)."""
    root = tmp_path_factory.mktemp("models")
    return {name: (root / name, write_release(root / name, name, fixture_vocab(), seed=i, **DROPOUT_FREE))
            for i, name in enumerate(RELEASES)}


def model_cfg(name, folder):
    return compose([f"model={name}", f"model.checkpoint_dir={folder}"]).model


def build(name, folder, num_labels=4):
    cfg = model_cfg(name, folder)
    _, vocab = models.load_tokenizer(cfg, [])
    return models.build_classifier(cfg, models.bert_config(cfg, len(vocab)), num_labels, seed=0)


@pytest.mark.parametrize("name", RELEASES)
def test_each_config_names_its_release(name):
    cfg = compose([f"model={name}"]).model
    family, files = RELEASES[name]
    assert (cfg.family, dict(cfg.files)) == (family, files)
    assert (cfg.url is None) == (name in NO_URL) and cfg.source
    assert OmegaConf.select(cfg, "cpu_friendly", default=False) is (name == "albert_tiny_zh")
    assert set(cfg.shape) >= set(models.SHAPE_KEYS) and cfg.learning_rate > 0


@pytest.mark.parametrize("name", RELEASES)
def test_loading_gives_exactly_the_saved_weights(releases, name):
    folder, arrays = releases[name]
    model = build(name, folder)
    used = {k: v for k, v in arrays.items() if not k.startswith(UNUSED_PREFIXES)}
    top = "electra" if RELEASES[name][0] == "electra" else "bert"
    np.testing.assert_array_equal(models.embedding_matrix(model).numpy(), arrays[f"{top}/embeddings/word_embeddings"])
    encoder = [w for w in model.trainable_weights if not w.name.startswith("classifier")]
    # Each encoder weight is one saved array, bit for bit, and each saved array is used:
    # nothing is left at its random initial value, nothing saved is skipped.
    matches = [[k for k, v in used.items() if w.shape == v.shape and np.array_equal(w.numpy(), v)] for w in encoder]
    assert all(len(m) == 1 for m in matches), [w.name for w, m in zip(encoder, matches) if len(m) != 1]
    assert sorted(k for m in matches for k in m) == sorted(used)
    if RELEASES[name][0] == "albert":  # one shared layer, factorised embeddings projected up
        assert models.embedding_matrix(model).shape == (len(fixture_vocab()), 16)
        assert model.get_layer("Embedding-Mapping").kernel.shape == (16, 32)


@pytest.mark.parametrize("family", BY_FAMILY)
def test_fgm_step_equals_the_dense_reference(releases, family):
    folder, _ = releases[BY_FAMILY[family]]
    model, batch = build(BY_FAMILY[family], folder), repeated_token_batch()
    e0 = models.embedding_matrix(model).numpy()
    clean, adv, ref_grads = reference_fgm(model, batch, 0.5)
    loss, grads = tf.function(FGM(model, epsilon=0.5))(*batch)
    assert float(loss) == pytest.approx(adv, rel=1e-5) and adv > clean
    for a, b in zip(dense(grads), dense(ref_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(models.embedding_matrix(model).numpy(), e0, rtol=0, atol=1e-7)


@pytest.mark.parametrize("family", BY_FAMILY)
def test_gp_step_equals_the_dense_reference(releases, family):
    folder, _ = releases[BY_FAMILY[family]]
    model, batch = build(BY_FAMILY[family], folder), repeated_token_batch()
    clean, expected_total, per_position, ref_grads = per_position_reference(model, batch, 1.0)
    # The penalty is on the looked-up token embeddings: embedding_size wide where factorised.
    assert per_position.shape[-1] == models.embedding_matrix(model).shape[-1]
    total, grads = tf.function(GradientPenalty(model, epsilon=1.0))(*batch)
    assert float(total) == pytest.approx(expected_total, rel=1e-5) and float(total) > clean
    by_name = dict(zip([v.name for v in model.trainable_variables], dense(grads)))
    for name, ref in ref_grads.items():
        np.testing.assert_allclose(by_name[name], tf.convert_to_tensor(ref).numpy(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", ["roberta_wwm_ext", "albert_tiny_zh", "nezha_base", "electra_base"])
def test_a_run_of_each_family_trains_and_writes_its_record(releases, tmp_path, name):
    folder, _ = releases[name]
    results = tmp_path / "results"
    # A model that is not cpu_friendly runs on a machine without a GPU only when asked to.
    device = {} if name == "albert_tiny_zh" else {"++trainer.device": "cpu"}
    overrides = tiny_overrides(make_clue(tmp_path / "clue", n_train=240, n_dev=80), results, "tnews", "fgm", {
        "model": name, "model.checkpoint_dir": folder, "trainer.epochs": 2, "trainer.learning_rate": 2e-3,
        "method.epsilon": 0.05, **device})
    overrides = [o for o in overrides if not o.startswith(("model.hidden_size", "model.intermediate_size",
                                                           "model.max_position_embeddings"))]
    record = run(compose(overrides))
    assert (record["status"], record["model"], record["method"]) == ("complete", name, "fgm")
    assert record["config"]["model"]["family"] == RELEASES[name][0]
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert record["best_dev_acc"] > 1 / len(CLASS_WORDS) + 0.3, record["history"]
    assert len(list((results / "runs").glob(f"tnews_{name}_fgm_seed0_*.json"))) == 1


def copy_without(folder, tmp_path, drop=None):
    target = tmp_path / folder.name
    shutil.copytree(folder, target, ignore=lambda _, names: [n for n in names if n == drop])
    return target


@pytest.mark.parametrize("name", RELEASES)
def test_a_missing_checkpoint_file_is_named(releases, tmp_path, name):
    folder, _ = releases[name]
    files = RELEASES[name][1]
    for missing in (f"{files['checkpoint']}.index", files["config"], files["vocab"]):
        broken = copy_without(folder, tmp_path / missing, drop=missing)
        with pytest.raises(UserError) as err:
            models.load_tokenizer(model_cfg(name, broken), [])
        assert str(err.value) == (f"{broken / missing}: missing from the checkpoint folder of model={name}; run "
                                  f"`make model MODEL={name}` to check the folder, or fetch it again")


@pytest.mark.parametrize("name", RELEASES)
def test_a_vocab_from_another_checkpoint_is_an_error(releases, tmp_path, name):
    folder, _ = releases[name]
    files = RELEASES[name][1]
    other = copy_without(folder, tmp_path)
    with (other / files["vocab"]).open("a", encoding="utf-8") as f:
        f.write("[unused1]\n")
    cfg = model_cfg(name, other)
    _, vocab = models.load_tokenizer(cfg, [])
    n = len(fixture_vocab())
    with pytest.raises(UserError) as err:
        models.bert_config(cfg, len(vocab))
    assert str(err.value) == (f"{other / files['config']}: vocab_size is {n} but {files['vocab']} has {n + 1} tokens; "
                              "the config and vocab come from different checkpoints")


def make_model(*args):
    return subprocess.run([sys.executable, "-m", "experiments.download", "model", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", NO_URL)
def test_a_model_without_url_says_where_to_get_it(releases, tmp_path, name):
    cfg = compose([f"model={name}", f"paths.models_dir={tmp_path}", "paths.clue_dir=/nonexistent"])
    dest = cfg.model.checkpoint_dir
    files = RELEASES[name][1]
    required = ", ".join([files["config"], files["vocab"], f"{files['checkpoint']}.index",
                          f"{files['checkpoint']}.data-00000-of-00001"])
    expected = (f"{dest}: not found; model={name} has no direct download URL: get it from {cfg.model.source} and "
                f"unpack it into {dest}/ so that it holds {required}; or set model.checkpoint_dir to a folder that "
                "already does")
    with pytest.raises(UserError) as err:  # what `make run` meets first (download.auto)
        download.ensure(download.model_target(cfg.model, cfg.download), cfg.download)
    assert str(err.value) == expected
    assert list(tmp_path.iterdir()) == []  # nothing downloaded, nothing created


def test_make_model_without_url_is_one_line_and_verifies_a_copy_put_there(releases, tmp_path):
    """`make model MODEL=macbert_base`: one line without a checkpoint; with one, its files are checked."""
    missing = make_model("model=macbert_base", f"paths.models_dir={tmp_path}")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert missing.stderr.startswith(f"error: {tmp_path}/chinese_macbert_base: not found; model=macbert_base has no "
                                     "direct download URL: get it from the TensorFlow 'MacBERT-base, Chinese' link of "
                                     f"github.com/ymcui/MacBERT (Download section) and unpack it into {tmp_path}/")
    shutil.copytree(releases["macbert_base"][0], tmp_path / "chinese_macbert_base")
    assert make_model("model=macbert_base", f"paths.models_dir={tmp_path}").returncode == 0
    (tmp_path / "chinese_macbert_base" / "chinese_macbert_base.ckpt.index").unlink()
    broken = make_model("model=macbert_base", f"paths.models_dir={tmp_path}")
    assert broken.returncode == 2 and broken.stderr.startswith(
        f"error: {tmp_path}/chinese_macbert_base/chinese_macbert_base.ckpt.index: missing; model=macbert_base has "
        "no direct download URL: get it from")
