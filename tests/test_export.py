"""Export to a Hugging Face folder, and back. Round trip TF1 -> suite -> export -> HF folder -> suite:
the encoder output is bit for bit the same; the logits of the exported BertForSequenceClassification,
computed here in numpy as transformers defines it (pooler: dense + tanh on the [CLS] vector, then the
classifier), equal the suite's within 1e-5 (the linear pooler's float32 rounding). A make pretrain
folder exported as BertForMaskedLM and read back gives the same masked-LM logits (tolerance 0)."""

import json

import numpy as np
import pytest
import tf_keras as keras
from omegaconf import OmegaConf

from experiments.commands import export as export_command
from experiments.errors import UserError
from experiments.model import encoder, head, hf_export, hf_format, mlm, release
from experiments.model import tokenizer as tokenizers
from tests.helpers.google_checkpoint import RELEASES, fixture_vocab, write_release

DROPOUT_FREE = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
LABELS = ["100", "101", "102"]


def cfg_of(folder, family="bert", name="macbert_base"):
    return OmegaConf.create({"name": name, "family": family, "checkpoint_dir": str(folder), "files": RELEASES[name][1]})


def classifier(cfg):
    _, vocab = tokenizers.load_tokenizer(cfg, [])
    config = encoder.bert_config(cfg, len(vocab))
    return head.build_classifier(cfg, config, len(LABELS), seed=0), config


def ids():
    rng = np.random.default_rng(4)
    out = rng.integers(5, len(fixture_vocab()), size=(5, 10)).astype(np.int32)
    out[:, 0], out[:, -1] = 2, 3
    return [out, np.zeros_like(out)]


@pytest.mark.slow
@pytest.mark.parametrize("family,name", [("bert", "macbert_base"), ("albert", "albert_tiny_zh")])
def test_round_trip_gives_the_suites_logits(tmp_path, family, name):
    write_release(tmp_path / "tf1", name, fixture_vocab(), seed=7, **DROPOUT_FREE)
    cfg = cfg_of(tmp_path / "tf1", family, name)
    model, config = classifier(cfg)
    dense = model.get_layer(head.HEAD_LAYER)  # a trained head stands in: other than the seeded init
    dense.kernel.assign(np.random.default_rng(1).normal(0, 0.5, dense.kernel.shape).astype(np.float32))
    transformer = encoder.build_encoder(OmegaConf.merge(cfg, {"checkpoint_dir": None}), config, seed=0)
    tensors = hf_export.classifier_tensors(
        hf_export.encoder_arrays(model, transformer), dense.kernel.numpy(), dense.bias.numpy(), family
    )
    arch = f"{hf_export.ARCH[family]}ForSequenceClassification"
    out = hf_export.write_folder(
        tmp_path / "hf", tensors, hf_export.hf_config(config, family, arch, LABELS), fixture_vocab(), "# card\n"
    )
    # the folder: PyTorch names, format pt, labels, the vocabulary
    from safetensors import safe_open

    with safe_open(out / "model.safetensors", "np") as f:
        assert f.metadata() == {"format": "pt"}
    written = json.loads((out / "config.json").read_text())
    assert written["architectures"] == [arch] and written["model_type"] == family
    assert written["id2label"] == {"0": "100", "1": "101", "2": "102"} and written["label2id"]["102"] == 2
    assert (out / "vocab.txt").read_text(encoding="utf-8").splitlines() == fixture_vocab()
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "BertTokenizer"
    # back into the suite: the same encoder, bit for bit
    back, _ = classifier(cfg_of(out, family, name))
    cls = [keras.Model(m.inputs, m.get_layer("CLS-token").output)(ids()).numpy() for m in (model, back)]
    np.testing.assert_array_equal(cls[0], cls[1])
    # transformers' head on the exported tensors (BertPooler: tanh(W h + b); then the classifier)
    weights = hf_format.read_safetensors(out / "model.safetensors")
    pooler = "albert.pooler" if family == "albert" else "bert.pooler.dense"
    pooled = np.tanh(cls[1] @ weights[f"{pooler}.weight"].T + weights[f"{pooler}.bias"])
    logits = pooled @ weights["classifier.weight"].T + weights["classifier.bias"]
    suite = model(ids()).numpy()
    assert np.abs(suite).max() > 0.1
    np.testing.assert_allclose(logits, suite, rtol=0, atol=1e-5)


def test_electra_runs_are_refused_in_one_line():
    with pytest.raises(UserError, match="ELECTRA") as err:
        hf_export.classifier_tensors({}, np.zeros((4, 2)), np.zeros(2), "electra")
    assert len(str(err.value).splitlines()) == 1


@pytest.mark.slow
def test_a_pretrained_folder_exports_as_masked_lm(tmp_path):
    name = "macbert_base"
    folder = tmp_path / "pretrained" / "tnews_tiny_0123456789"
    write_release(folder, name, fixture_vocab(), seed=9, mlm_head=True, **DROPOUT_FREE)
    model = {"name": name, "family": "bert", "files": RELEASES[name][1], "checkpoint_dir": None}
    (folder / "pretrain_record.json").write_text(
        json.dumps(
            {
                "id": "0123456789",
                "tasks": ["tnews"],
                "steps": 10,
                "history": [{"accuracy": 0.25}],
                "config": {"model": model},
            }
        )
    )
    out = export_command.export_pretrained(folder, tmp_path / "hf")
    written = json.loads((out / "config.json").read_text())
    assert written["architectures"] == ["BertForMaskedLM"] and "id2label" not in written
    assert "cls.predictions.transform.dense.weight" in hf_format.read_safetensors(out / "model.safetensors")
    assert "tnews" in (out / "README.md").read_text()

    def masked_lm_logits(cfg):
        _, vocab = tokenizers.load_tokenizer(cfg, [])
        built = mlm.build_mlm(cfg, encoder.bert_config(cfg, len(vocab)), 0, encoder.checkpoint_weights(cfg))
        assert built.head_source == "checkpoint"
        return built.model([*ids(), np.array([[1, 2]] * 5, np.int32)]).numpy()

    hf_cfg = cfg_of(out)
    assert release.is_hf(hf_cfg)
    np.testing.assert_array_equal(masked_lm_logits(cfg_of(folder)), masked_lm_logits(hf_cfg))


def test_model_dir_needs_a_pretrain_record(tmp_path):
    with pytest.raises(UserError, match="pretrain_record.json") as err:
        export_command.export_pretrained(tmp_path)
    assert len(str(err.value).splitlines()) == 1
