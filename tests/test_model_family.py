"""The Chinese model family (configs/model/*.yaml): each release's checkpoint layout, written
here by tests/helpers/google_checkpoint.py, loads bit for bit through bert4keras; FGM and gradient
penalty on it equal tests/helpers/references.py's dense references (on ALBERT's and ELECTRA's
factorised embeddings too); one run per family trains end to end; the missing-file,
wrong-vocab and no-URL mistakes are one-line errors."""

import shutil

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from experiments.commands import bench
from experiments.commands.run import run
from experiments.config import compose
from experiments.data import fetch
from experiments.errors import UserError
from experiments.model import encoder, head
from experiments.model import tokenizer as tokenizers
from experiments.train.methods.fgm import FGM
from experiments.train.methods.gp import GradientPenalty
from tests.helpers.clue import make_clue, tiny_overrides
from tests.helpers.google_checkpoint import RELEASES, UNUSED_PREFIXES, fixture_vocab, write_release
from tests.helpers.references import per_position_reference, reference_fgm
from tests.helpers.tiny_bert import dense, repeated_token_batch

NO_URL = ["macbert_base", "nezha_base", "electra_base"]
# One release per family for the method and end-to-end tests (the others share its family's code).
BY_FAMILY = {"bert": "macbert_base", "albert": "albert_base_zh", "nezha": "nezha_base", "electra": "electra_base"}
DROPOUT_FREE = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}  # deterministic forward passes


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """Every release's folder under one models_dir, by model config name: (folder, saved arrays)."""
    root = tmp_path_factory.mktemp("models")
    return {
        name: (root / name, write_release(root / name, name, fixture_vocab(), seed=i, **DROPOUT_FREE))
        for i, name in enumerate(RELEASES)
    }


def model_cfg(name, folder):
    return compose([f"model={name}", f"model.checkpoint_dir={folder}"]).model


def build(name, folder, num_labels=4):
    cfg = model_cfg(name, folder)
    _, vocab = tokenizers.load_tokenizer(cfg, [])
    return head.build_classifier(cfg, encoder.bert_config(cfg, len(vocab)), num_labels, seed=0)


@pytest.mark.parametrize("name", RELEASES)
def test_each_config_names_its_release(name):
    cfg = compose([f"model={name}"]).model
    family, files = RELEASES[name]
    assert (cfg.family, dict(cfg.files)) == (family, files)
    assert (cfg.url is None) == (name in NO_URL) and cfg.source
    assert OmegaConf.select(cfg, "cpu_friendly", default=False) is (name == "albert_tiny_zh")
    assert set(cfg.shape) >= set(encoder.SHAPE_KEYS) and cfg.learning_rate > 0


@pytest.mark.parametrize("name", RELEASES)
def test_loading_gives_exactly_the_saved_weights(releases, name):
    folder, arrays = releases[name]
    model = build(name, folder)
    used = {k: v for k, v in arrays.items() if not k.startswith(UNUSED_PREFIXES)}
    top = "electra" if RELEASES[name][0] == "electra" else "bert"
    np.testing.assert_array_equal(encoder.embedding_matrix(model).numpy(), arrays[f"{top}/embeddings/word_embeddings"])
    encoder_weights = [w for w in model.trainable_weights if not w.name.startswith("classifier")]
    # Each encoder weight is one saved array, bit for bit, and each saved array is used:
    # nothing is left at its random initial value, nothing saved is skipped.
    matches = [
        [k for k, v in used.items() if w.shape == v.shape and np.array_equal(w.numpy(), v)] for w in encoder_weights
    ]
    assert all(len(m) == 1 for m in matches), [w.name for w, m in zip(encoder_weights, matches) if len(m) != 1]
    assert sorted(k for m in matches for k in m) == sorted(used)
    if RELEASES[name][0] == "albert":  # one shared layer, factorised embeddings projected up
        assert encoder.embedding_matrix(model).shape == (len(fixture_vocab()), 16)
        assert model.get_layer("Embedding-Mapping").kernel.shape == (16, 32)


@pytest.mark.slow
@pytest.mark.parametrize("family", BY_FAMILY)
def test_fgm_step_equals_the_dense_reference(releases, family):
    folder, _ = releases[BY_FAMILY[family]]
    model, batch = build(BY_FAMILY[family], folder), repeated_token_batch()
    e0 = encoder.embedding_matrix(model).numpy()
    clean, adv, ref_grads = reference_fgm(model, batch, 0.5)
    loss, grads = tf.function(FGM(model, epsilon=0.5))(*batch)
    assert float(loss) == pytest.approx(adv, rel=1e-5) and adv > clean
    for a, b in zip(dense(grads), dense(ref_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(encoder.embedding_matrix(model).numpy(), e0, rtol=0, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("family", BY_FAMILY)
def test_gp_step_equals_the_dense_reference(releases, family):
    folder, _ = releases[BY_FAMILY[family]]
    model, batch = build(BY_FAMILY[family], folder), repeated_token_batch()
    clean, expected_total, per_position, ref_grads = per_position_reference(model, batch, 1.0)
    # The penalty is on the looked-up token embeddings: embedding_size wide where factorised.
    assert per_position.shape[-1] == encoder.embedding_matrix(model).shape[-1]
    total, grads = tf.function(GradientPenalty(model, epsilon=1.0))(*batch)
    assert float(total) == pytest.approx(expected_total, rel=1e-5) and float(total) > clean
    by_name = dict(zip([v.name for v in model.trainable_variables], dense(grads)))
    for name, ref in ref_grads.items():
        np.testing.assert_allclose(by_name[name], tf.convert_to_tensor(ref).numpy(), rtol=1e-4, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,method",
    [("roberta_wwm_ext", "baseline"), ("albert_tiny_zh", "fgm"), ("nezha_base", "fgm"), ("electra_base", "gp")],
)
def test_a_run_of_each_family_trains_from_the_checkpoint(releases, tmp_path, name, method):
    folder, arrays = releases[name]
    results = tmp_path / "results"
    # A model that is not cpu_friendly runs on a machine without a GPU only when asked to.
    device = {} if name == "albert_tiny_zh" else {"++trainer.device": "cpu"}
    overrides = tiny_overrides(
        make_clue(tmp_path / "clue", n_train=160, n_dev=40),
        results,
        "tnews",
        method,
        {
            "model": name,
            "model.checkpoint_dir": folder,
            "trainer.epochs": 1,
            "trainer.learning_rate": 5e-3,
            "method.epsilon": 0.05,
            **device,
        },
    )
    overrides = [o for o in overrides if not o.startswith("model.shape.")]  # the release's config.json says
    record = run(compose(overrides))
    assert (record["status"], record["model"], record["method"]) == ("complete", name, method)
    assert record["config"]["model"]["family"] == RELEASES[name][0]
    assert (record["train_samples"], record["dev_samples"], len(record["history"])) == (160, 40, 1)
    [path] = (results / "runs").glob(f"tnews_{name}_{method}_seed0_*.json")
    # Trained from the release's weights: the [MASK] row (no fixture sentence has it) is the saved
    # one bit for bit, the [CLS] row (in every batch) has moved.
    top = "electra" if RELEASES[name][0] == "electra" else "bert"
    trained = build(name, folder, num_labels=record["num_labels"])
    trained.load_weights(record["best_weights"])
    start, trained = arrays[f"{top}/embeddings/word_embeddings"], encoder.embedding_matrix(trained).numpy()
    mask, cls = fixture_vocab().index("[MASK]"), fixture_vocab().index("[CLS]")
    np.testing.assert_array_equal(trained[mask], start[mask])
    assert not np.allclose(trained[cls], start[cls], rtol=0, atol=1e-4)


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
            tokenizers.load_tokenizer(model_cfg(name, broken), [])
        assert str(err.value) == (
            f"{broken / missing}: missing from the checkpoint folder of model={name} (nor is "
            "it an HF folder: config.json, vocab.txt and one of model.safetensors, "
            "model.safetensors.index.json, tf_model.h5, pytorch_model.bin); run "
            f"`make model MODEL={name}` to check the folder, or fetch it again"
        )


@pytest.mark.parametrize("name", RELEASES)
def test_a_vocab_from_another_checkpoint_is_an_error(releases, tmp_path, name):
    folder, _ = releases[name]
    files = RELEASES[name][1]
    other = copy_without(folder, tmp_path)
    with (other / files["vocab"]).open("a", encoding="utf-8") as f:
        f.write("[unused1]\n")
    cfg = model_cfg(name, other)
    _, vocab = tokenizers.load_tokenizer(cfg, [])
    n = len(fixture_vocab())
    with pytest.raises(UserError) as err:
        encoder.bert_config(cfg, len(vocab))
    assert str(err.value) == (
        f"{other / files['config']}: vocab_size is {n} but {files['vocab']} has {n + 1} tokens; "
        "the config and vocab come from different checkpoints"
    )


def make_model(capsys, *overrides) -> tuple[int, str]:
    """`make model ...` in this process: its exit code and what it printed on stderr."""
    from experiments.commands import download

    try:
        code = download.main(["model", *overrides])
    except SystemExit as exit:  # errors.reported(): a UserError exits with 2
        code = exit.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name", NO_URL)
def test_a_model_without_url_says_where_to_get_it(releases, tmp_path, name):
    cfg = compose([f"model={name}", f"paths.models_dir={tmp_path}", "paths.clue_dir=/nonexistent"])
    dest = cfg.model.checkpoint_dir
    files = RELEASES[name][1]
    required = ", ".join(
        [files["config"], files["vocab"], f"{files['checkpoint']}.index", f"{files['checkpoint']}.data-00000-of-00001"]
    )
    expected = (
        f"{dest}: not found; model={name} has no direct download URL: get it from {cfg.model.source} and "
        f"unpack it into {dest}/ so that it holds {required}; or set model.checkpoint_dir to a folder that "
        "already does"
    )
    with pytest.raises(UserError) as err:  # what `make run` meets first (download.auto)
        fetch.ensure(fetch.model_target(cfg.model, cfg.download), cfg.download)
    assert str(err.value) == expected
    assert list(tmp_path.iterdir()) == []  # nothing downloaded, nothing created


def test_make_model_without_url_is_one_line_and_verifies_a_copy_put_there(releases, tmp_path, capsys):
    """`make model MODEL=macbert_base`: one line without a checkpoint; with one, its files are checked.
    (model.hub_id=null: the Hub source is tests/test_hub.py's.)"""
    where = (f"paths.models_dir={tmp_path}", "model.hub_id=null")
    code, err = make_model(capsys, "model=macbert_base", *where)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(
        f"error: {tmp_path}/chinese_macbert_base: not found; model=macbert_base has no "
        "direct download URL: get it from the TensorFlow 'MacBERT-base, Chinese' link of "
        f"github.com/ymcui/MacBERT (Download section) and unpack it into {tmp_path}/"
    )
    shutil.copytree(releases["macbert_base"][0], tmp_path / "chinese_macbert_base")
    assert make_model(capsys, "model=macbert_base", *where) == (0, "")
    (tmp_path / "chinese_macbert_base" / "chinese_macbert_base.ckpt.index").unlink()
    code, err = make_model(capsys, "model=macbert_base", *where)
    assert code == 2 and err.startswith(
        f"error: {tmp_path}/chinese_macbert_base/chinese_macbert_base.ckpt.index: missing; model=macbert_base has "
        "no direct download URL: get it from"
    )


def test_bench_builds_a_models_shape_without_weights():
    """`make bench MODEL=albert_tiny_zh` builds ALBERT-tiny's own shape: its parameters, counted independently."""
    model, shape = bench.build_model(compose(["model=albert_tiny_zh"]).model, 0)
    v, e, h, i, labels = 21128, 128, 312, 1248, 15
    layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h  # one set of weights for all 4 layers
    embeddings = (v + 2 + 512) * e + 2 * e + (e * h + h)  # token, segment, position, LayerNorm, mapping up
    assert model.count_params() == embeddings + layer + h * labels + labels
    assert (shape["num_hidden_layers"], shape["hidden_size"], shape["embedding_size"]) == (4, 312, 128)


def test_clue_figures_of_these_models_stand_beside_their_rows(tmp_path):
    """results/reference/clue.csv's rows for the models CLUE lists reach `make table`; ALBERT-base has no dev."""
    from experiments.report import summary
    from tests.helpers.synthetic_records import write

    clue = pd.read_csv(summary.CLUE_CSV, comment="#")
    assert set(clue.model) == {
        "bert_base",
        "roberta_wwm_ext",
        "roberta_wwm_ext_large",
        "albert_tiny_zh",
        "albert_base_zh",
    } and set(clue.model) <= set(RELEASES)
    for model in ("roberta_wwm_ext", "albert_base_zh", "macbert_base"):
        write(tmp_path, "tnews", "baseline", 0, 0.5, final=0.5, model=model)
    summary.write_all(tmp_path)
    text = (tmp_path / "table.md").read_text()
    assert "| baseline [roberta_wwm_ext] | 50.00 (n=1) |  |  | 56.94 (57.51) |" in text
    assert "| baseline [albert_base_zh] | 50.00 (n=1) |  |  | 55.06 |" in text
    assert "| baseline [macbert_base] | 50.00 (n=1) |  |  |  |" in text  # not in CLUE's tables


def test_nezha_layer_norms_use_the_releases_epsilon(tmp_path):
    """bert4keras builds NEZHA's LayerNorms with Keras's 1e-7; NEZHA's TensorFlow code and Hugging
    Face use 1e-12. The embeddings' LayerNorm sees a variance near 1e-3 (0.02-scale embeddings), where
    the two differ by about 3e-5: its output must be numpy's LayerNorm at 1e-12."""
    import tf_keras as keras
    from bert4keras.layers import LayerNormalization

    arrays = write_release(tmp_path, "nezha_base", fixture_vocab(), **DROPOUT_FREE)
    model = build("nezha_base", tmp_path)
    norms = [layer for layer in model.layers if isinstance(layer, LayerNormalization)]
    assert len(norms) == 1 + 2 * 2 and all(layer.epsilon == 1e-12 for layer in norms)
    ids = np.array([[2, 7, 8, 9, 10, 3]], np.int32)
    out = keras.Model(model.inputs, model.get_layer("Embedding-Norm").output)([ids, np.zeros_like(ids)]).numpy()[0]
    x = arrays["bert/embeddings/word_embeddings"][ids[0]] + arrays["bert/embeddings/token_type_embeddings"][0]

    def layer_norm(eps):
        centred = x - x.mean(-1, keepdims=True)
        return (
            centred / np.sqrt((centred**2).mean(-1, keepdims=True) + eps) * arrays["bert/embeddings/LayerNorm/gamma"]
            + arrays["bert/embeddings/LayerNorm/beta"]
        )

    assert np.abs(out - layer_norm(1e-12)).max() < 2e-6
    assert np.abs(out - layer_norm(1e-7)).max() > 1e-5  # the test can tell the two epsilons apart


def test_albert_with_several_layer_groups_is_refused_in_one_line(tmp_path):
    write_release(tmp_path, "albert_tiny_zh", fixture_vocab(), num_hidden_groups=12)
    cfg = model_cfg("albert_tiny_zh", tmp_path)
    with pytest.raises(UserError) as err:
        encoder.bert_config(cfg, len(fixture_vocab()))
    assert str(err.value) == (
        f"{tmp_path / 'albert_config_tiny_g.json'}: num_hidden_groups is 12, but bert4keras reads "
        "only ALBERT's group_0/inner_group_0 (one shared layer), so this release would load "
        "wrong; use an ALBERT release with num_hidden_groups 1 (albert_tiny_zh, albert_base_zh)"
    )
