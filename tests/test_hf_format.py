"""Hugging Face folders as model folders: the same tiny model written as a TF1 release
(tests/helpers/google_checkpoint.py) and as an HF folder (tests/helpers/hf_folders.py, names made by transformers'
own renames) in each weight format gives the same encoder output and logits, for bert, electra,
albert and nezha. Tolerance: none (0.0): both load the same float32 arrays into the same graph.
The failures (a missing tensor, a family mismatch, ALBERT groups, a .bin without torch) are one
line each."""

import importlib.util
import json

import numpy as np
import pytest
import tf_keras as keras
from omegaconf import OmegaConf

from experiments import records
from experiments.errors import UserError
from experiments.model import encoder, head, hf_format, release
from experiments.model import tokenizer as tokenizers
from tests.helpers.google_checkpoint import (
    CONFIGS,
    RELEASES,
    fixture_vocab,
    write_release,
)
from tests.helpers.hf_folders import hf_tensors, write_hf_folder, write_safetensors

BY_FAMILY = {"bert": "macbert_base", "albert": "albert_tiny_zh", "nezha": "nezha_base", "electra": "electra_base"}
DROPOUT_FREE = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
HAS_TORCH = importlib.util.find_spec("torch") is not None
FORMATS = [
    "safetensors",
    "sharded",
    "h5",
    pytest.param(
        "bin", marks=pytest.mark.skipif(not HAS_TORCH, reason="torch is the optional extra (make env EXTRAS=torch)")
    ),
]


def model_cfg(family, folder):
    _, files = RELEASES[BY_FAMILY[family]]
    return OmegaConf.create(
        {"name": BY_FAMILY[family], "family": family, "checkpoint_dir": str(folder), "files": files}
    )


def outputs(cfg, ids):
    """(encoder output, logits) of the classifier of ``cfg`` (head seeded: the same in both layouts)."""
    _, vocab = tokenizers.load_tokenizer(cfg, [])
    model = head.build_classifier(cfg, encoder.bert_config(cfg, len(vocab)), 3, seed=0)
    cls = keras.Model(model.inputs, model.get_layer("CLS-token").output)
    inputs = [ids, np.zeros_like(ids)]
    return cls(inputs).numpy(), model(inputs).numpy()


def token_ids():
    rng = np.random.default_rng(3)
    ids = rng.integers(5, len(fixture_vocab()), size=(4, 12)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 2, 3
    ids[3, 8:] = 0
    return ids


@pytest.fixture(scope="module")
def tf1(tmp_path_factory):
    """Each family's TF1 release (dropout-free) and its saved arrays and config."""
    root = tmp_path_factory.mktemp("tf1")
    out = {}
    for family, name in BY_FAMILY.items():
        arrays = write_release(
            root / family, name, fixture_vocab(), seed=1, mlm_head=family != "electra", **DROPOUT_FREE
        )
        config = json.loads((root / family / RELEASES[name][1]["config"]).read_text())
        out[family] = (root / family, arrays, config, outputs(model_cfg(family, root / family), token_ids()))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("family", BY_FAMILY)
@pytest.mark.parametrize("fmt", FORMATS)
def test_an_hf_folder_gives_the_release_outputs(tf1, tmp_path, family, fmt):
    _, arrays, config, (cls_ref, logits_ref) = tf1[family]
    folder = write_hf_folder(tmp_path / "hf", family, config, fixture_vocab(), arrays, fmt)
    cfg = model_cfg(family, folder)
    assert release.is_hf(cfg)
    cls, logits = outputs(cfg, token_ids())
    np.testing.assert_array_equal(cls, cls_ref)
    np.testing.assert_array_equal(logits, logits_ref)
    facts = encoder.checkpoint_facts(cfg)
    weights = {
        "safetensors": "model.safetensors",
        "sharded": "model.safetensors.index.json",
        "h5": "tf_model.h5",
        "bin": "pytorch_model.bin",
    }[fmt]
    assert facts["weight_file"] == str(folder / weights) and facts["sha256"] == records.file_sha256(folder / weights)
    # what the classifier does not read is named: the pooler and the pretraining heads
    unused = set(facts["unused"])
    if family == "electra":
        assert unused == {n for n in hf_tensors(arrays, family) if n.startswith("discriminator_predictions.")}
    else:
        assert any("pooler" in n for n in unused) and any("predictions" in n for n in unused)
        assert not any("encoder.layer" in n or "albert_layers" in n or "embeddings." in n for n in unused)


@pytest.mark.parametrize("family", ["bert", "albert"])
def test_both_layer_norm_namings_and_no_prefix(tf1, tmp_path, family):
    _, arrays, config, (_, logits_ref) = tf1[family]
    folder = write_hf_folder(
        tmp_path / "old", family, config, fixture_vocab(), arrays, old_layer_norm=True, prefix=False
    )
    names = hf_format.read_safetensors(folder / "model.safetensors")
    assert any(n.endswith("LayerNorm.gamma") for n in names) and not any(n.startswith(family + ".") for n in names)
    np.testing.assert_array_equal(outputs(model_cfg(family, folder), token_ids())[1], logits_ref)


def bf16(array):
    return (array.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)


@pytest.mark.parametrize("dtype", ["BF16", "F16"])
def test_half_precision_files_load_as_float32(tmp_path, dtype):
    """A bf16 (f16) file gives what the TF1 release of the same values rounded to bf16 (f16) gives."""
    family, name = "bert", "macbert_base"
    arrays = write_release(tmp_path / "probe", name, fixture_vocab(), seed=2, **DROPOUT_FREE)
    rounded = {k: bf16(v) if dtype == "BF16" else v.astype(np.float16).astype(np.float32) for k, v in arrays.items()}
    config = json.loads((tmp_path / "probe" / RELEASES[name][1]["config"]).read_text())
    ref = tmp_path / "ref"
    import tensorflow as tf

    ref.mkdir()
    (ref / RELEASES[name][1]["config"]).write_text(json.dumps(config))
    (ref / "vocab.txt").write_text("".join(t + "\n" for t in fixture_vocab()), encoding="utf-8")
    tf.raw_ops.SaveV2(
        prefix=str(ref / RELEASES[name][1]["checkpoint"]),
        tensor_names=sorted(rounded),
        shape_and_slices=[""] * len(rounded),
        tensors=[tf.constant(rounded[k]) for k in sorted(rounded)],
    )
    folder = write_hf_folder(tmp_path / "hf", family, config, fixture_vocab(), arrays, dtype=dtype)
    data = (folder / "model.safetensors").read_bytes()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {dtype}
    loaded = hf_format.read_tensors(folder / "model.safetensors")
    assert {a.dtype for a in loaded.values()} == {np.dtype(np.float32)}
    np.testing.assert_array_equal(
        outputs(model_cfg(family, folder), token_ids())[1], outputs(model_cfg(family, ref), token_ids())[1]
    )


def one_line(err):
    return len(str(err.value).splitlines()) == 1


def test_a_missing_tensor_is_named(tf1, tmp_path):
    _, arrays, config, _ = tf1["bert"]
    tensors = hf_tensors(arrays, "bert")
    del tensors["bert.encoder.layer.1.output.dense.weight"]
    folder = write_hf_folder(tmp_path / "hf", "bert", config, fixture_vocab(), {})
    write_safetensors(folder / "model.safetensors", tensors)
    with pytest.raises(UserError, match=r"no tensor bert\.encoder\.layer\.1\.output\.dense\.weight") as err:
        outputs(model_cfg("bert", folder), token_ids())
    assert one_line(err) and "model.safetensors" in str(err.value)


def test_a_family_mismatch_is_one_line(tf1, tmp_path):
    _, arrays, config, _ = tf1["bert"]
    folder = write_hf_folder(tmp_path / "hf", "bert", config, fixture_vocab(), arrays)
    with pytest.raises(UserError, match=r"model_type is 'bert' but model.family=electra") as err:
        outputs(model_cfg("electra", folder), token_ids())
    assert one_line(err)


def test_albert_with_several_groups_is_refused(tf1, tmp_path):
    _, arrays, config, _ = tf1["albert"]
    folder = write_hf_folder(tmp_path / "hf", "albert", {**config, "num_hidden_groups": 2}, fixture_vocab(), arrays)
    with pytest.raises(UserError, match="num_hidden_groups is 2") as err:
        outputs(model_cfg("albert", folder), token_ids())
    assert one_line(err)


def test_a_bin_without_torch_is_one_line_naming_the_extra(tf1, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    folder = write_hf_folder(tmp_path / "hf", "bert", tf1["bert"][2], fixture_vocab(), {})
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not read")  # never unpickled
    with pytest.raises(UserError, match=r"make env EXTRAS=torch") as err:
        hf_format.read_tensors(folder / "pytorch_model.bin")
    assert one_line(err) and "model.safetensors" in str(err.value)


def test_the_weight_files_are_preferred_in_order(tmp_path):
    for name in ("pytorch_model.bin", "tf_model.h5", "model.safetensors"):
        (tmp_path / name).write_bytes(b"")
        assert hf_format.weight_file(tmp_path).name == name  # the last one written is the most preferred


def test_the_name_map_reads_both_ways():
    """tf1_name and pt_name are inverses on every variable bert4keras's families read."""
    for family in BY_FAMILY:
        config = {**CONFIGS[family], "vocab_size": 40}
        from tests.helpers.google_checkpoint import release_variables

        for tf_name in release_variables(family, config, np.random.default_rng(0), mlm_head=family != "electra"):
            if tf_name.startswith("discriminator_predictions"):
                continue
            pt, transpose = hf_format.pt_name(tf_name, family)
            assert hf_format.tf1_name(pt, family) == (tf_name, transpose), (family, tf_name, pt)


def test_doctor_names_an_hf_folder(tf1, tmp_path, capsys):
    """`make doctor ARGS="model.checkpoint_dir=<HF folder>"`: the folder and its weight file, OK (not the
    TF1 files it lacks)."""
    from experiments.commands import doctor
    from experiments.config import compose

    _, arrays, config, _ = tf1["bert"]
    folder = write_hf_folder(tmp_path / "hf", "bert", config, fixture_vocab(), arrays)
    overrides = ["model=macbert_base", f"model.checkpoint_dir={folder}", f"paths.clue_dir={tmp_path}"]
    report = doctor.Report()
    doctor.check_files(report, compose(overrides), [], overrides)
    out = capsys.readouterr().out
    assert report.failures == 0
    sha = records.file_sha256(folder / "model.safetensors")
    assert (
        f"{doctor.OK}  macbert_base checkpoint: {folder}: a Hugging Face folder, model.safetensors (sha256 {sha[:16]}"
        in out
    )
