"""Write a tiny model's TF1 release arrays (tests/helpers/google_checkpoint.py) again as a Hugging Face folder.

The names are made here by the string renames transformers' own TF1 loaders apply
(``load_tf_weights_in_bert`` / ``_albert`` / ``_electra`` / ``_nezha``: kernel -> weight transposed,
gamma/beta -> weight/bias or kept (the older naming), ``layer_<i>`` -> ``layer.<i>``, ALBERT's
group renames), independently of experiments/model/hf_format.py, whose mapping the tests check.
Formats: safetensors (one file or sharded with an index), tf_model.h5 (Keras 2's layout of
transformers' TF classes: ``<layer>/<model scope>/<weight name>:0``, kernels (in, out)), and
pytorch_model.bin (torch.save; only where torch is installed).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

HF_PREFIX = {"bert": "bert", "electra": "electra", "albert": "albert", "nezha": "nezha"}
MODEL_TYPE = HF_PREFIX


def hf_name(tf_name: str, family: str, old_layer_norm: bool = False) -> tuple[str, bool]:
    """(PyTorch name, transpose?) of a TF1 variable, by transformers' renames."""
    name = tf_name
    if family == "albert":  # load_tf_weights_in_albert's renames, in its order
        for a, b in (
            ("ffn_1", "ffn"),
            ("bert/", "albert/"),
            ("attention_1", "attention"),
            ("transform/", ""),
            ("LayerNorm_1", "full_layer_layer_norm"),
            ("LayerNorm", "attention/LayerNorm"),
            ("transformer/", ""),
            ("intermediate/dense/", ""),
            ("ffn/intermediate/output/dense/", "ffn_output/"),
            ("/output/", "/"),
            ("/self/", "/"),
            ("pooler/dense", "pooler"),
            ("cls/predictions", "predictions"),
            ("predictions/attention", "predictions"),
            ("embeddings/attention", "embeddings"),
            ("inner_group_", "albert_layers/"),
            ("group_", "albert_layer_groups/"),
        ):
            name = name.replace(a, b)
    else:
        name = re.sub(r"^bert/", f"{HF_PREFIX[family]}/", name)
        name = re.sub(r"layer_(\d+)", r"layer/\1", name)
    parts = name.split("/")
    leaf, transpose = parts[-1], False
    if leaf == "kernel":
        parts[-1], transpose = "weight", True
    elif leaf in ("gamma", "beta"):
        parts[-1] = leaf if old_layer_norm else {"gamma": "weight", "beta": "bias"}[leaf]
    elif leaf == "output_bias":
        parts[-1] = "bias"
    elif leaf == "output_weights":
        parts[-1] = "weight"
    elif leaf.endswith("_embeddings"):
        parts.append("weight")
    return ".".join(parts), transpose


def hf_tensors(
    arrays: dict[str, np.ndarray], family: str, old_layer_norm: bool = False, prefix: bool = True
) -> dict[str, np.ndarray]:
    out = {}
    for tf_name, array in arrays.items():
        name, transpose = hf_name(tf_name, family, old_layer_norm)
        if not prefix and name.startswith(HF_PREFIX[family] + "."):
            name = name[len(HF_PREFIX[family]) + 1 :]
        out[name] = np.ascontiguousarray(array.T if transpose else array)
    return out


def hf_config(tf1_config: dict, family: str) -> dict:
    config = {**tf1_config, "model_type": MODEL_TYPE[family], "architectures": ["Model"], "layer_norm_eps": 1e-12}
    if family == "nezha":
        config.update({"max_relative_position": 64, "embedding_size": 128})  # as sijunhe/nezha-cn-base's config
    return config


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str = "F32") -> None:
    """The safetensors layout written by hand (so that bf16 needs no library support)."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        if dtype == "BF16" and array.dtype == np.float32:
            raw = (array.view(np.uint32) >> 16).astype("<u2").tobytes()  # truncation: the float32's top half
            kind = "BF16"
        elif dtype == "F16" and array.dtype == np.float32:
            raw, kind = array.astype("<f2").tobytes(), "F16"
        else:
            raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
            kind = {"float32": "F32", "int64": "I64"}[array.dtype.name]
        header[name] = {"dtype": kind, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def write_h5(path: Path, tensors: dict[str, np.ndarray], family: str) -> None:
    """Keras 2 save_weights' layout: one group per top layer, datasets at <layer>/<scope>/<name>:0."""
    import h5py

    scope = f"tf_{family}_for_pre_training"
    with h5py.File(path, "w") as f:
        layers: dict[str, list[str]] = {}
        for name, array in tensors.items():
            parts = name.split(".")
            if parts[0] == "cls":
                parts[0] = "mlm___cls" if parts[1] == "predictions" else "nsp___cls"
            leaf = parts[-1]
            kind = "kernel" if array.ndim == 2 and not parts[-2].endswith("embeddings") else None
            if parts[-2].endswith("_embeddings"):
                parts[-1] = "weight" if parts[-2] == "word_embeddings" else "embeddings"
            elif kind:
                parts[-1], array = "kernel", array.T
            elif "LayerNorm" in parts[-2] or "layer_norm" in parts[-2]:
                parts[-1] = {"weight": "gamma", "bias": "beta", "gamma": "gamma", "beta": "beta"}[leaf]
            tf_name = "/".join(re.sub(r"^(\d+)$", r"_._\1", p) for p in parts)
            tf_name = re.sub(r"/_\._(\d+)", r"_._\1", tf_name)
            layer = tf_name.split("/")[0]
            weight = f"{scope}/{tf_name}:0"
            f.create_dataset(f"{layer}/{weight}", data=array)
            layers.setdefault(layer, []).append(weight)
        f.attrs["layer_names"] = [n.encode() for n in layers]
        for layer, names in layers.items():
            f[layer].attrs["weight_names"] = [n.encode() for n in names]


def write_hf_folder(
    folder: Path,
    family: str,
    tf1_config: dict,
    vocab: list[str],
    arrays: dict[str, np.ndarray],
    fmt: str = "safetensors",
    old_layer_norm: bool = False,
    prefix: bool = True,
    dtype: str = "F32",
    extra: dict | None = None,
) -> Path:
    """The HF folder of a release's arrays: config.json, vocab.txt and the weights in ``fmt``
    (safetensors, sharded, h5, bin)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf_config(tf1_config, family), indent=2))
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    tensors = {**hf_tensors(arrays, family, old_layer_norm, prefix), **(extra or {})}
    if fmt == "safetensors":
        write_safetensors(folder / "model.safetensors", tensors, dtype)
    elif fmt == "sharded":
        names = sorted(tensors)
        shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
        for shard, keys in shards.items():
            write_safetensors(folder / shard, {k: tensors[k] for k in keys}, dtype)
        index = {"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    elif fmt == "h5":
        write_h5(folder / "tf_model.h5", tensors, family)
    elif fmt == "bin":
        import torch

        torch.save({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}, folder / "pytorch_model.bin")
    else:
        raise ValueError(fmt)
    return folder
