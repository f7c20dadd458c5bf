"""Hugging Face model folders (``config.json`` + weights + ``vocab.txt``) read as bert4keras checkpoints.

bert4keras 0.11.5's ``Transformer.load_variable`` reads ``checkpoint[name]`` when its checkpoint is
a dict (models.py), so an HF folder loads through the same ``variable_mapping()`` as a TF1
release: the tensors are renamed to the TF1 names of Google's, ALBERT's and ELECTRA's releases
(the inverse of transformers' ``load_tf_weights_in_{bert,albert,electra,nezha}``), PyTorch's
(out, in) linear weights transposed to TF's (in, out) kernels. Sources and the naming rules:
docs/models.md.

Weight files, preferred in this order when a folder has several: ``model.safetensors`` (or its
sharded form, ``model.safetensors.index.json`` + shards), ``tf_model.h5`` (Keras 2 weights of
transformers' TF classes), ``pytorch_model.bin`` (a pickle: read only with
``torch.load(weights_only=True)``, from the optional ``torch`` extra; never unpickled otherwise).
float16 / bfloat16 tensors load as float32. A tensor the encoder needs that the file lacks stops
with one line naming it; tensors it does not use (pooler, MLM/NSP/discriminator heads) are named
in the log and the run record. No TensorFlow or torch import at module level.
"""

from __future__ import annotations

import json
import logging
import pickle  # only for the exception torch's weights_only loader raises; nothing is unpickled here
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from experiments import records
from experiments.errors import UserError

log = logging.getLogger(__name__)

CONFIG, VOCAB = "config.json", "vocab.txt"
SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
H5, BIN = "tf_model.h5", "pytorch_model.bin"
WEIGHT_FILES = (SAFETENSORS, SAFETENSORS_INDEX, H5, BIN)  # in order of preference
TORCH_EXTRA = "torch"  # pyproject's optional extra with torch (make env EXTRAS=torch)
# config.json's model_type -> bert4keras family (RoBERTa-wwm and MacBERT are model_type bert)
MODEL_TYPES = {"bert": "bert", "electra": "electra", "albert": "albert", "nezha": "nezha"}
PREFIXES = ("bert", "electra", "albert", "nezha")  # the base model's attribute name in transformers' heads
# Buffers, not weights: BERT's position ids, NEZHA's sinusoidal relative positions (bert4keras computes them)
BUFFERS = re.compile(r"(^|\.)(position_ids|token_type_ids)$|relative_positions_encoding\.positions_encoding$")
# safetensors dtypes (the format's header names) -> numpy; BF16 is widened by hand (numpy has no bfloat16)
SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


@dataclass
class HFWeights:
    """An HF folder's weights under TF1 names, and where they came from (for the log and record)."""

    arrays: dict  # TF1 variable name -> float32 array (what bert4keras loads)
    hf_names: dict  # TF1 variable name -> the tensor's name in the file
    weight_file: str  # the file read (the index, for sharded safetensors)
    sha256: str  # of weight_file
    unused: list = field(default_factory=list)  # tensors of the file the encoder does not read

    def record(self) -> dict:
        return {"layout": "hf", "weight_file": self.weight_file, "sha256": self.sha256, "unused": self.unused}


class Checkpoint(dict):
    """A ``{TF1 name: array}`` dict as bert4keras's ``load_variable`` reads it, with its source."""

    def __init__(self, weights: HFWeights):
        super().__init__(weights.arrays)
        self.weights = weights


# --- the folder ---------------------------------------------------------------------------------


def is_hf_folder(folder: Path) -> bool:
    return (folder / CONFIG).is_file() and weight_file(folder) is not None


def weight_file(folder: Path) -> Path | None:
    """The weight file read from ``folder``: the first of WEIGHT_FILES it holds."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def read_config(folder: Path) -> dict:
    path = folder / CONFIG
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise UserError(f"{path}: not valid JSON ({err}); fetch the model folder again") from None


def check_family(folder: Path, config: dict, family: str) -> None:
    """``config.json``'s model_type must be ``family`` (model.family); a config without one is taken as it."""
    model_type = config.get("model_type")
    if model_type is None:
        log.info("%s: no model_type; read as model.family=%s", folder / CONFIG, family)
        return
    if MODEL_TYPES.get(model_type) != family:
        known = ", ".join(f"{k} ({v})" for k, v in MODEL_TYPES.items())
        raise UserError(
            f"{folder / CONFIG}: model_type is {model_type!r} but model.family={family}; pick the model "
            f"config of that family (model_type -> family: {known})"
        )


def encoder_config(folder: Path, config: dict, family: str) -> dict:
    """The bert4keras config of an HF ``config.json``: the same keys, less what bert4keras would misread."""
    check_family(folder, config, family)
    out = {k: v for k, v in config.items() if not k.startswith("_")}
    if family in ("bert", "nezha"):
        # NezhaConfig carries ALBERT's embedding_size 128 that NEZHA never uses (its embeddings are hidden_size
        # wide); bert4keras would build an Embedding-Mapping for it.
        out.pop("embedding_size", None)
    if family == "nezha" and int(config.get("max_relative_position", 64)) != 64:
        raise UserError(
            f"{folder / CONFIG}: max_relative_position is {config['max_relative_position']}, but "
            "bert4keras's NEZHA computes relative positions up to 64 only; use a NEZHA model with 64"
        )
    if family == "electra" and out.get("embedding_size") is None:
        out["embedding_size"] = out["hidden_size"]
    return out


# --- reading tensors ----------------------------------------------------------------------------


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of an HF weight file, in PyTorch's naming and layout, float32."""
    if path.name == SAFETENSORS_INDEX:
        tensors = read_sharded(path)
    elif path.suffix == ".safetensors":
        tensors = read_safetensors(path)
    elif path.suffix == ".h5":
        tensors = read_h5(path)
    elif path.suffix == ".bin":
        tensors = read_bin(path)
    else:
        raise UserError(f"{path}: not a weight file this suite reads ({', '.join(WEIGHT_FILES)})")
    return {name: _float32(name, array) for name, array in tensors.items()}


def _float32(name: str, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "f" and array.dtype != np.float32:
        return array.astype(np.float32)
    return array


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """A .safetensors file: 8 bytes little-endian header length, the JSON header (name -> dtype,
    shape, data_offsets), then the raw little-endian data (github.com/huggingface/safetensors)."""
    with path.open("rb") as f:
        try:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        except (struct.error, ValueError, UnicodeDecodeError) as err:
            raise UserError(f"{path}: not a safetensors file ({err}); fetch it again") from None
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[begin:end]
        if info["dtype"] == "BF16":  # the high 16 bits of a float32
            array = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] in SAFETENSORS_DTYPES:
            array = np.frombuffer(raw, np.dtype(SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<"))
        else:
            raise UserError(f"{path}: tensor {name} has dtype {info['dtype']}, which this suite does not read")
        out[name] = array.reshape(info["shape"]).copy()
    return out


def read_sharded(index: Path) -> dict[str, np.ndarray]:
    """Sharded safetensors: the index's weight_map names each tensor's shard file."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (ValueError, KeyError) as err:
        raise UserError(f"{index}: not a safetensors index ({err}); fetch it again") from None
    out = {}
    for shard in sorted(set(weight_map.values())):
        if not (index.parent / shard).is_file():
            raise UserError(f"{index.parent / shard}: shard named by {index.name} is missing; fetch the folder again")
        out.update(read_safetensors(index.parent / shard))
    return out


def read_h5(path: Path) -> dict[str, np.ndarray]:
    """transformers' tf_model.h5 (Keras 2 ``save_weights``): TF names (``bert/encoder/layer_._0/.../kernel:0``)
    turned into PyTorch's (``bert.encoder.layer.0....weight``, kernels transposed to (out, in))."""
    import h5py

    out = {}
    try:
        with h5py.File(path, "r") as f:

            def visit(name, node):
                if isinstance(node, h5py.Dataset):
                    out[name] = np.asarray(node[()])

            f.visititems(visit)
    except OSError as err:
        raise UserError(f"{path}: not an HDF5 file ({err}); fetch it again") from None
    return dict(_from_tf2_name(name, array) for name, array in out.items())


def _from_tf2_name(name: str, array: np.ndarray) -> tuple[str, np.ndarray]:
    parts = name.removesuffix(":0").split("/")
    heads = {*PREFIXES, "mlm___cls", "nsp___cls", "cls", "predictions", "discriminator_predictions", "sop_classifier"}
    # Keras stores each weight under its layer's group and its full name, the model's scope first
    # (bert/tf_bert_for_pre_training/bert/embeddings/...): keep what follows the model scope (tf_*)
    scopes = [i for i, p in enumerate(parts) if p.startswith("tf_")]
    if scopes:
        parts = parts[scopes[-1] + 1 :]
    else:
        parts = parts[next((i for i, p in enumerate(parts) if p in heads), 0) :]
    parts = ["cls" if p in ("mlm___cls", "nsp___cls") else p for p in parts]
    last = parts[-1]
    if last == "kernel":
        parts[-1], array = "weight", array.T
    elif last in ("gamma", "embeddings"):
        parts[-1] = "weight"
    elif last == "beta":
        parts[-1] = "bias"
    pt = ".".join(parts).replace("_._", ".")
    if re.fullmatch(r"(\w+\.)?embeddings\.weight", pt):  # early TF BERT: word embeddings directly under embeddings
        pt = pt.replace("embeddings.weight", "embeddings.word_embeddings.weight")
    return pt, array


def read_bin(path: Path) -> dict[str, np.ndarray]:
    """pytorch_model.bin is a pickle, untrusted: only torch.load(weights_only=True) reads it."""
    try:
        import torch
    except ImportError:
        others = ", ".join(n for n in WEIGHT_FILES if n != BIN)
        raise UserError(
            f"{path}: a pickle (pytorch_model.bin) is read only with torch's weights_only loader; install "
            f"the extra with `make env EXTRAS={TORCH_EXTRA}`, or use a copy of the model with {others} "
            "(on the Hub: another revision or a refs/pr/N conversion; model.hub_weights)"
        ) from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError) as err:  # weights_only: tensors only
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"{path}: torch.load(weights_only=True) refused it ({first[:200]}); use a safetensors copy"
        ) from None
    return {k: v.detach().to(torch.float32 if v.is_floating_point() else v.dtype).numpy() for k, v in state.items()}


# --- names ---------------------------------------------------------------------------------------
# One table read both ways: (PyTorch path, TF1 path, kind, families). {P} is the family's attribute
# in transformers (bert, electra, albert, nezha), {T} the TF1 top scope (bert; electra for ELECTRA).
# kind: "emb" (pt .weight <-> the TF1 name itself), "ln" (weight/bias <-> gamma/beta), "linear"
# (weight/bias <-> kernel/bias, the weight transposed), "plain" (the full names as written).
# Sources: transformers' load_tf_weights_in_bert / _albert / _electra / _nezha (the TF1 -> PyTorch
# renames) and bert4keras 0.11.5's variable_mapping (models.py).
_ALL, _NOT_ALBERT = ("bert", "electra", "albert", "nezha"), ("bert", "electra", "nezha")
_BERTLIKE = (
    ("attention.self.query", "attention/self/query", "linear"),
    ("attention.self.key", "attention/self/key", "linear"),
    ("attention.self.value", "attention/self/value", "linear"),
    ("attention.output.dense", "attention/output/dense", "linear"),
    ("attention.output.LayerNorm", "attention/output/LayerNorm", "ln"),
    ("intermediate.dense", "intermediate/dense", "linear"),
    ("output.dense", "output/dense", "linear"),
    ("output.LayerNorm", "output/LayerNorm", "ln"),
)
_ALBERTLAYER = (
    ("attention.query", "attention_1/self/query", "linear"),
    ("attention.key", "attention_1/self/key", "linear"),
    ("attention.value", "attention_1/self/value", "linear"),
    ("attention.dense", "attention_1/output/dense", "linear"),
    ("attention.LayerNorm", "LayerNorm", "ln"),
    ("ffn", "ffn_1/intermediate/dense", "linear"),
    ("ffn_output", "ffn_1/intermediate/output/dense", "linear"),
    ("full_layer_layer_norm", "LayerNorm_1", "ln"),
)
RULES = (
    ("{P}.embeddings.word_embeddings", "{T}/embeddings/word_embeddings", "emb", _ALL),
    ("{P}.embeddings.position_embeddings", "{T}/embeddings/position_embeddings", "emb", ("bert", "electra", "albert")),
    ("{P}.embeddings.token_type_embeddings", "{T}/embeddings/token_type_embeddings", "emb", _ALL),
    ("{P}.embeddings.LayerNorm", "{T}/embeddings/LayerNorm", "ln", _ALL),
    ("electra.embeddings_project", "electra/embeddings_project", "linear", ("electra",)),
    ("albert.encoder.embedding_hidden_mapping_in", "bert/encoder/embedding_hidden_mapping_in", "linear", ("albert",)),
    *(
        (f"{{P}}.encoder.layer.{{i}}.{pt}", f"{{T}}/encoder/layer_{{i}}/{tf}", kind, _NOT_ALBERT)
        for pt, tf, kind in _BERTLIKE
    ),
    *(
        (
            f"albert.encoder.albert_layer_groups.{{g}}.albert_layers.{{j}}.{pt}",
            f"bert/encoder/transformer/group_{{g}}/inner_group_{{j}}/{tf}",
            kind,
            ("albert",),
        )
        for pt, tf, kind in _ALBERTLAYER
    ),
    ("{P}.pooler.dense", "{T}/pooler/dense", "linear", _NOT_ALBERT),
    ("albert.pooler", "bert/pooler/dense", "linear", ("albert",)),
    ("cls.predictions.transform.dense", "cls/predictions/transform/dense", "linear", _NOT_ALBERT),
    ("cls.predictions.transform.LayerNorm", "cls/predictions/transform/LayerNorm", "ln", _NOT_ALBERT),
    ("cls.predictions.bias", "cls/predictions/output_bias", "plain", _NOT_ALBERT),
    ("predictions.dense", "cls/predictions/transform/dense", "linear", ("albert",)),
    ("predictions.LayerNorm", "cls/predictions/transform/LayerNorm", "ln", ("albert",)),
    ("predictions.bias", "cls/predictions/output_bias", "plain", ("albert",)),
    ("cls.seq_relationship.weight", "cls/seq_relationship/output_weights", "plain", ("bert", "nezha")),
    ("cls.seq_relationship.bias", "cls/seq_relationship/output_bias", "plain", ("bert", "nezha")),
)
_LEAVES = {
    "emb": {"weight": ""},
    "ln": {"weight": "gamma", "bias": "beta", "gamma": "gamma", "beta": "beta"},
    "linear": {"weight": "kernel", "bias": "bias"},
    "plain": {"": ""},
}


def _regex(template: str, sep: str) -> re.Pattern:
    escaped = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{g\}", r"(?P<g>\d+)")
    return re.compile(escaped.replace(r"\{j\}", r"(?P<j>\d+)"))


def _compiled(family: str):
    top = "electra" if family == "electra" else "bert"
    for pt, tf, kind, families in RULES:
        if family in families:
            pt, tf = pt.replace("{P}", family), tf.replace("{T}", top)
            yield _regex(pt, "."), pt, _regex(tf, "/"), tf, kind


def tf1_name(name: str, family: str) -> tuple[str, bool] | None:
    """(the TF1 variable name, whether to transpose) of a PyTorch-named tensor (with or without its
    family prefix; LayerNorms as weight/bias or gamma/beta); None for one bert4keras never reads."""
    if name.partition(".")[0] not in (*PREFIXES, "cls", "predictions"):
        name = f"{family}.{name}"
    elif name.partition(".")[0] in PREFIXES:
        name = f"{family}.{name.partition('.')[2]}"
    for pt_re, _, _, tf, kind in _compiled(family):
        path, leaf = (name, "") if kind == "plain" else name.rsplit(".", 1) if "." in name else (name, "")
        m = pt_re.fullmatch(path)
        if m and leaf in _LEAVES[kind]:
            tf_leaf = _LEAVES[kind][leaf]
            target = tf.format(**m.groupdict())
            return (f"{target}/{tf_leaf}" if tf_leaf else target), kind == "linear" and leaf == "weight"
    return None


def pt_name(tf_name: str, family: str) -> tuple[str, bool] | None:
    """(the PyTorch name, with the family prefix, whether to transpose) of a TF1 variable name: the
    inverse of tf1_name, in transformers' current naming (LayerNorm weight/bias)."""
    for _, pt, tf_re, _, kind in _compiled(family):
        if kind in ("emb", "plain"):
            path, leaf = tf_name, ""
        else:
            path, _, leaf = tf_name.rpartition("/")
        m = tf_re.fullmatch(path)
        if m is None:
            continue
        leaves = {v: k for k, v in _LEAVES[kind].items() if k not in ("gamma", "beta")}
        if leaf in leaves:
            base = pt.format(**m.groupdict())
            return (f"{base}.{leaves[leaf]}" if leaves[leaf] else base), kind == "linear" and leaves[leaf] == "weight"
    return None


def strip_prefix(name: str) -> str:
    first, _, rest = name.partition(".")
    return rest if first in PREFIXES and rest else name


def load(folder: Path, family: str, config: dict) -> HFWeights:
    """The weights of HF ``folder`` under TF1 names (``unused``: what has no TF1 name at all; the
    encoder adds what it does not build, see encoder.build_encoder)."""
    path = weight_file(folder)
    if path is None:
        raise UserError(f"{folder}: no weight file; an HF model folder holds one of {', '.join(WEIGHT_FILES)}")
    if family == "albert":
        for key in ("num_hidden_groups", "inner_group_num"):
            if int(config.get(key, 1)) > 1:
                raise UserError(
                    f"{folder / CONFIG}: {key} is {config[key]}, but bert4keras reads only ALBERT's "
                    "group 0 / inner group 0 (one shared layer), so this model would load wrong"
                )
    tensors = read_tensors(path)
    arrays, hf_names, unused = {}, {}, []
    decoder_weight = None
    has_bias = any(strip_prefix(n) in ("cls.predictions.bias", "predictions.bias") for n in tensors)
    for name in sorted(tensors):
        short = strip_prefix(name)
        if BUFFERS.search(short):
            continue  # buffers (position ids, NEZHA's sinusoids): computed, not weights
        if short in ("cls.predictions.decoder.weight", "predictions.decoder.weight"):
            decoder_weight = name
            continue
        if short in ("cls.predictions.decoder.bias", "predictions.decoder.bias"):
            if has_bias:
                continue  # the same tensor as cls.predictions.bias (tied in transformers)
            short = short.replace(".decoder.bias", ".bias")
        target = tf1_name(short, family)
        if target is None:
            unused.append(name)
            continue
        tf_name, transpose = target
        if tf_name in arrays:
            raise UserError(
                f"{path}: {name} and {hf_names[tf_name]} are the same weight ({tf_name}); the file "
                "holds two copies of it, so one would be dropped: keep one"
            )
        array = tensors[name]
        arrays[tf_name] = np.ascontiguousarray(array.T if transpose else array)
        hf_names[tf_name] = name
    if decoder_weight is not None:  # bert4keras ties the MLM decoder to the token embeddings
        words = next((k for k in arrays if k.endswith("embeddings/word_embeddings")), None)
        if words is None or not np.array_equal(tensors[decoder_weight], arrays[words]):
            unused.append(decoder_weight)
            log.warning(
                "%s: %s differs from the token embeddings; bert4keras ties the MLM decoder to them, so it "
                "is not loaded",
                path,
                decoder_weight,
            )
    return HFWeights(arrays, hf_names, str(path), records.file_sha256(path), unused)
