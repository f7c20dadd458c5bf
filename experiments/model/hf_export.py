"""What the suite trains, written as a Hugging Face folder that ``transformers`` loads with ``from_pretrained``.

The folder: ``model.safetensors`` (PyTorch names and layout, metadata ``format: pt``), ``config.json``
(``model_type``, ``architectures``, for a classifier ``id2label``/``label2id``), ``vocab.txt`` (the
character vocabulary too, for ``tiny``), ``tokenizer_config.json`` (BertTokenizer, lower case) and a
README model card. Names come from model/hf_format.py's table read backwards (``pt_name``).

A fine-tuned classifier becomes ``<Family>ForSequenceClassification``. Its head differs from the
suite's: transformers puts the pooler (dense + tanh) between the [CLS] vector and the classifier,
where the blog's head reads the [CLS] vector directly. The export makes that pooler linear to
float32 precision: weight ``POOLER_SCALE`` x identity, bias 0, and the classifier's weight divided
by ``POOLER_SCALE``: tanh(s x) / s = x (1 - s^2 x^2 / 3 + ...), so with s = 1e-6 the relative
change is below 1e-9 for |x| < 50. The logits equal the suite's; the card says so. ELECTRA's
sequence head (dense + GELU + out_proj) has no such exact linear form and is not exported.
A pretrained (masked-LM) model becomes ``<Family>ForMaskedLM``, its decoder tied to the token
embeddings as in the releases.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from experiments.errors import UserError
from experiments.model import hf_format

POOLER_SCALE = 1e-6
ARCH = {"bert": "Bert", "albert": "Albert", "nezha": "Nezha", "electra": "Electra"}
# The HF config keys a TF1 release config carries under the same names
CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "embedding_size",
    "num_hidden_groups",
    "inner_group_num",
    "max_relative_position",
)


def encoder_arrays(model, transformer) -> dict[str, np.ndarray]:
    """The weights of a built Keras ``model`` (a classifier or masked-LM model of the suite) under
    the TF1 names of ``transformer``'s ``variable_mapping()`` (a bert4keras Transformer of the same
    family and shape: its layer names are the model's)."""
    names = {layer.name for layer in model.layers}
    out = {}
    for layer_name, variables in transformer.variable_mapping().items():
        if layer_name not in names:
            continue
        weights = model.get_layer(layer_name).trainable_weights
        for variable, weight in zip(variables, weights):
            out[variable] = weight.numpy()
    return out


def pt_tensors(arrays: dict[str, np.ndarray], family: str) -> dict[str, np.ndarray]:
    """TF1-named arrays as PyTorch-named float32 tensors (kernels transposed to (out, in))."""
    out = {}
    for tf_name, array in arrays.items():
        target = hf_format.pt_name(tf_name, family)
        if target is None:
            raise UserError(f"{tf_name}: no transformers name for this {family} variable; it cannot be exported")
        name, transpose = target
        out[name] = np.ascontiguousarray((array.T if transpose else array).astype(np.float32))
    return out


def hf_config(release_config: dict, family: str, architecture: str, labels: list[str] | None) -> dict:
    config = {k: release_config[k] for k in CONFIG_KEYS if k in release_config}
    if family in ("bert", "nezha"):
        config.pop("embedding_size", None)
    config.update(
        {
            "model_type": family,
            "architectures": [architecture],
            "layer_norm_eps": float(release_config.get("layer_norm_eps", 1e-12)),
            "pad_token_id": 0,
            "tie_word_embeddings": True,
        }
    )
    config.setdefault("initializer_range", 0.02)
    if labels is not None:
        config.update(
            {
                "id2label": {str(i): str(label) for i, label in enumerate(labels)},
                "label2id": {str(label): i for i, label in enumerate(labels)},
                "num_labels": len(labels),
                "problem_type": "single_label_classification",
            }
        )
    return config


def classifier_tensors(arrays: dict[str, np.ndarray], kernel: np.ndarray, bias: np.ndarray, family: str) -> dict:
    """The encoder, a linear pooler (POOLER_SCALE x I) and the classifier scaled back (module docstring)."""
    if family == "electra":
        raise UserError(
            "an ELECTRA run's head cannot be written as ElectraForSequenceClassification (its "
            "dense + GELU head has no exact linear form); export the encoder with MODEL_DIR instead"
        )
    hidden = kernel.shape[0]
    out = pt_tensors({k: v for k, v in arrays.items() if not k.startswith(("cls/", "bert/pooler/"))}, family)
    pooler = "albert.pooler" if family == "albert" else f"{family}.pooler.dense"
    out[f"{pooler}.weight"] = (POOLER_SCALE * np.eye(hidden)).astype(np.float32)
    out[f"{pooler}.bias"] = np.zeros(hidden, np.float32)
    out["classifier.weight"] = np.ascontiguousarray((kernel / POOLER_SCALE).T.astype(np.float32))
    out["classifier.bias"] = bias.astype(np.float32)
    return out


def write_folder(
    out: str | Path,
    tensors: dict[str, np.ndarray],
    config: dict,
    vocab: list[str] | Path,
    card: str,
    max_length: int = 512,
) -> Path:
    """Write the HF folder at ``out``, built beside it and moved into place (a previous one is replaced)."""
    from safetensors.numpy import save_file

    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(
        {k: np.ascontiguousarray(v) for k, v in sorted(tensors.items())},
        str(tmp / hf_format.SAFETENSORS),
        metadata={"format": "pt"},
    )
    os.chmod(tmp / hf_format.SAFETENSORS, 0o644)  # save_file writes it owner-only
    (tmp / hf_format.CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if isinstance(vocab, Path):
        shutil.copyfile(vocab, tmp / hf_format.VOCAB)
    else:
        (tmp / hf_format.VOCAB).write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    tokenizer = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": True,
        "tokenize_chinese_chars": True,
        "model_max_length": max_length,
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }
    (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer, indent=2) + "\n", encoding="utf-8")
    (tmp / "README.md").write_text(card, encoding="utf-8")
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out
