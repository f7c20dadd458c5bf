"""A pretrained model as a folder in its family's release layout: the JSON config, a TF1
name-based checkpoint (``<prefix>.index`` + ``<prefix>.data-00000-of-00001``) with the release's
variable names, and the vocabulary, under the file names of ``model.files`` (Google's
``bert_config.json``, ``bert_model.ckpt``, ``vocab.txt`` for ``tiny`` and ``bert_mini``). Every
command that takes a checkpoint folder (``model.checkpoint_dir``) loads it as it loads a release;
so do Google's, HFL's and Hugging Face's TF-checkpoint loaders.

bert4keras 0.11.5 has ``Transformer.save_weights_as_checkpoint``, but under TF2's eager mode it
fails with "The Session graph is empty": it reads the weights with ``K.batch_get_value`` inside a
fresh ``tf.Graph()`` (models.py), where the eager variables do not exist. So the names come from
the same ``variable_mapping()`` (each Keras layer -> the release's variable names, in the order of
the layer's weights, as ``load_weights_from_checkpoint`` reads them), the values from the
variables themselves, and ``tf.raw_ops.SaveV2`` writes the bundle, as TF1's ``Saver`` did.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from experiments import records

# Variables of a release that a masked-LM pretraining does not train but that its release
# ships: kept unchanged in a continued model's checkpoint (BERT's pooler and NSP head).
UNTRAINED_PREFIXES = ("bert/pooler/", "cls/seq_relationship/")


def release_arrays(encoder) -> dict[str, np.ndarray]:
    """Every weight of ``encoder`` (a bert4keras Transformer, the MLM head included if built)
    under its release name, through ``variable_mapping()``."""
    arrays = {}
    for layer_name, names in encoder.variable_mapping().items():
        if layer_name not in encoder.layers:
            continue
        weights = encoder.layers[layer_name].trainable_weights
        if len(weights) != len(names):
            raise RuntimeError(f"{layer_name}: {len(weights)} weights but variable_mapping names {len(names)}")
        for name, weight in zip(names, weights):
            arrays[name] = weight.numpy()
    return arrays


def untrained_arrays(checkpoint: str | dict) -> dict[str, np.ndarray]:
    """The variables of a source checkpoint (a TF1 prefix, or an HF folder's {TF1 name: array}) under
    ``UNTRAINED_PREFIXES``, unchanged."""
    import tensorflow as tf

    if isinstance(checkpoint, dict):
        return {name: checkpoint[name] for name in sorted(checkpoint) if name.startswith(UNTRAINED_PREFIXES)}

    reader = tf.train.load_checkpoint(checkpoint)
    return {
        name: reader.get_tensor(name)
        for name in sorted(reader.get_variable_to_shape_map())
        if name.startswith(UNTRAINED_PREFIXES)
    }


def write_checkpoint(prefix: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """A TF1 name-based checkpoint of ``arrays`` at ``prefix`` (``.index`` and one data shard)."""
    import tensorflow as tf

    names = sorted(arrays)
    tf.raw_ops.SaveV2(
        prefix=str(prefix),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(arrays[n]) for n in names],
    )


def write_model_folder(
    folder: str | Path, files: dict[str, str], config: dict, vocab: list[str] | Path, arrays: dict[str, np.ndarray]
) -> Path:
    """Write the release folder at ``folder``: built beside it, then moved into place, so that a
    killed write never leaves a half folder under the final name (a previous one is replaced).
    ``vocab``: the tokens in id order, or the source release's vocab file, copied byte for byte."""
    folder = Path(folder)
    with records.atomic_path(folder, folder=True) as tmp:
        (tmp / files["config"]).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if isinstance(vocab, Path):
            shutil.copyfile(vocab, tmp / files["vocab"])
        else:
            (tmp / files["vocab"]).write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
        write_checkpoint(tmp / files["checkpoint"], arrays)
    return folder


def vocab_tokens(vocab: dict[str, int]) -> list[str]:
    """The tokens of a token -> id table in id order (a vocab.txt's lines)."""
    tokens = sorted(vocab, key=vocab.get)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ValueError("the vocabulary's ids are not 0..n-1")
    return tokens
