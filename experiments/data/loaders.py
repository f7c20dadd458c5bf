"""CLUE classification data: read the official JSON-lines files into texts and labels.

Nothing here touches the network: a task needs its folder under ``paths.clue_dir``
(``<task>_public/`` as the official zips unpack) and a vocab file. A task config
(configs/task/*.yaml) names its files, fields, labels and its input kind; one loader per
input kind turns a line into the text(s) the model reads:

- ``single``: one text field (TNEWS, IFLYTEK);
- ``pair``: two text fields, encoded as BERT's two segments (AFQMC, CMNLI, OCNLI, CSL);
  a field holding a list (CSL's keywords) is joined with spaces, as CLUE's baseline does;
- ``wsc``: CLUEWSC2020's text with span 1 wrapped in ``_`` ``_`` and span 2 in ``[`` ``]``,
  as CLUE's baseline (baselines/models/classifier_utils.py, WSCProcessor) does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Split:
    """One file of a task: the texts, their class indices (-1 where unlabelled) and ids."""

    texts: list[str]
    labels: np.ndarray
    ids: list
    texts_b: list[str] | None = None  # the second segment of each example (pair tasks)
    skipped: int = 0  # lines left out because their label is in task.skip_labels

    def all_texts(self) -> list[str]:
        """Every text of the split, both segments of a pair (the tiny model's vocabulary)."""
        return self.texts + (self.texts_b or [])


@dataclass(frozen=True)
class Format:
    """How a task's lines read: the input kind, its text fields, the labels to skip."""

    input: str = "single"  # single | pair | wsc
    fields: tuple = ("sentence",)  # one field (single, wsc) or two (pair)
    skip_labels: tuple = ()  # e.g. ("-",): CMNLI/OCNLI lines the annotators did not agree on
    label_source: str = "labels.json"  # where the label ids come from, for the messages


def task_format(task_cfg) -> Format:
    """The ``Format`` a task config says; keys it lacks take ``Format``'s defaults."""
    fields = task_cfg.get("text_fields") or list(Format.fields)
    source = labels_file(task_cfg) or f"configs/task/{task_cfg.name}.yaml: labels"
    fmt = Format(task_cfg.get("input") or "single", tuple(fields), tuple(task_cfg.get("skip_labels") or ()), source)
    want = {"single": 1, "pair": 2, "wsc": 1}
    if fmt.input not in want:
        raise UserError(f"task.input={fmt.input!r} is invalid: it must be one of {', '.join(want)}")
    if len(fmt.fields) != want[fmt.input]:
        raise UserError(
            f"task.text_fields={list(fmt.fields)} is invalid: input {fmt.input} reads "
            f"{want[fmt.input]} field{'s' * (want[fmt.input] > 1)}"
        )
    return fmt


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """The objects of a JSON-lines file with their line numbers; blank lines are skipped."""
    if not path.is_file():
        raise UserError(f"{path}: file not found; run `make data` or point paths.clue_dir at a copy of CLUE")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text ({err.reason}); re-download or re-encode the file") from None
    rows = []
    # split("\n"), not splitlines(): IFLYTEK sentences contain U+2028, which splitlines() breaks on.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number}: not a JSON object ({err.msg}); fix or remove the line") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
        rows.append((number, obj))
    if not rows:
        raise UserError(f"{path}: the file is empty; re-download it with `make data`")
    return rows


def read_label_ids(path: Path) -> list[str]:
    """The task's label ids in file order: a label's class index is its position here."""
    return [_field(path, number, obj, "label") for number, obj in read_jsonl(path)]


def single_text(path: Path, number: int, obj: dict, fields: tuple) -> tuple[str, None]:
    return _text(path, number, obj, fields[0]), None


def pair_texts(path: Path, number: int, obj: dict, fields: tuple) -> tuple[str, str]:
    return _text(path, number, obj, fields[0]), _text(path, number, obj, fields[1])


def wsc_text(path: Path, number: int, obj: dict, fields: tuple) -> tuple[str, None]:
    target = obj.get("target")
    if not isinstance(target, dict):
        raise UserError(
            f"{path}:{number}: the line has no 'target' object (span1_text, span1_index, "
            f"span2_text, span2_index); fields found: {', '.join(obj) or 'none'}"
        )
    return mark_spans(_text(path, number, obj, fields[0]), target, f"{path}:{number}"), None


LOADERS = {"single": single_text, "pair": pair_texts, "wsc": wsc_text}  # task.input -> loader of one line


def mark_spans(text: str, target: dict, where: str) -> str:
    """``text`` with span 1 wrapped in ``_`` ``_`` and span 2 in ``[`` ``]``, as CLUE's baseline
    marks CLUEWSC2020 (WSCProcessor). ``spanK_index`` is the span's character offset in the
    text (the baseline checks ``text[index:index + len(span)] == span``); a span that is not
    there is the data's error, named by file:line."""
    marks = []  # (position, 0 for a closing mark / 1 for an opening one, mark)
    for k, (left, right) in (("1", ("_", "_")), ("2", ("[", "]"))):
        for key in (f"span{k}_text", f"span{k}_index"):
            if key not in target:
                raise UserError(
                    f"{where}: the line's target has no {key!r} field; fields found: {', '.join(target) or 'none'}"
                )
        span, index = str(target[f"span{k}_text"]), target[f"span{k}_index"]
        if (
            not isinstance(index, int)
            or isinstance(index, bool)
            or not span
            or index < 0
            or text[index : index + len(span)] != span
        ):
            found = text[index : index + len(span)] if isinstance(index, int) and index >= 0 else ""
            raise UserError(
                f"{where}: span{k}_text {span!r} is not at span{k}_index {index!r} of the text "
                f"(found {found!r} there); fix the line's target"
            )
        marks += [(index, 1, left), (index + len(span), 0, right)]
    # At a shared position a span's closing mark goes before the next one's opening mark.
    out, previous = [], 0
    for position, _, mark in sorted(marks):
        out += [text[previous:position], mark]
        previous = position
    return "".join(out + [text[previous:]])


def read_split(
    path: Path, label_ids: list[str], labelled: bool = True, limit: int | None = None, fmt: Format = Format()
) -> Split:
    """Read a split; ``limit`` keeps the first N examples (HF run_glue's max_*_samples).
    Lines whose label is in ``fmt.skip_labels`` are left out, counted in ``Split.skipped``."""
    index = {label: i for i, label in enumerate(label_ids)}
    load = LOADERS[fmt.input]
    texts, texts_b, labels, ids, skipped = [], [], [], [], 0
    for number, obj in read_jsonl(path):
        if limit is not None and len(texts) == limit:
            break
        if labelled:
            label = _field(path, number, obj, "label")
            if label in fmt.skip_labels:
                skipped += 1
                continue
            if label not in index:
                raise UserError(
                    f"{path}:{number}: label {label!r} is not in {fmt.label_source}; valid ids: {', '.join(label_ids)}"
                )
        a, b = load(path, number, obj, fmt.fields)
        texts.append(a)
        texts_b.append(b)
        labels.append(index[label] if labelled else -1)
        ids.append(obj.get("id", obj.get("idx", len(ids))))  # test files: "id" (WSC: "idx")
    if skipped:
        log.info(
            "%s: skipped %d line%s labelled %s (task.skip_labels)",
            path,
            skipped,
            "s" * (skipped > 1),
            " or ".join(map(repr, fmt.skip_labels)),
        )
    return Split(texts, np.asarray(labels, dtype=np.int32), ids, texts_b if fmt.input == "pair" else None, skipped)


def _field(path: Path, number: int, obj: dict, key: str) -> str:
    if key not in obj:
        raise UserError(f"{path}:{number}: the line has no {key!r} field; fields found: {', '.join(obj) or 'none'}")
    return str(obj[key])


def _text(path: Path, number: int, obj: dict, key: str) -> str:
    """A text field; a list (CSL's keywords) is joined with spaces."""
    value = obj.get(key)
    return " ".join(map(str, value)) if isinstance(value, list) else _field(path, number, obj, key)


def task_dir(clue_dir: str | Path, task_cfg) -> Path:
    folder = Path(clue_dir) / task_cfg.dir
    if not folder.is_dir():
        raise UserError(
            f"{folder}: CLUE {task_cfg.name} data folder not found; run `make data TASKS={task_cfg.name}` "
            f"or set paths.clue_dir to a folder holding {task_cfg.dir}/"
        )
    return folder


def labels_file(task_cfg) -> str | None:
    """The file of the task folder holding its label ids (None: the config lists them)."""
    return task_cfg.get("labels_file") or (None if task_cfg.get("labels") else "labels.json")


def label_ids_of(folder: Path, task_cfg) -> list[str]:
    """The label ids in class-index order: the task's labels file, or its ``labels`` list."""
    if labels_file(task_cfg):
        path = folder / labels_file(task_cfg)
        label_ids, where = read_label_ids(path), str(path)
    else:
        label_ids, where = [str(label) for label in task_cfg.labels], f"configs/task/{task_cfg.name}.yaml: labels"
    if len(label_ids) != task_cfg.num_labels:
        raise UserError(f"{where}: {len(label_ids)} labels, but task.num_labels is {task_cfg.num_labels}")
    return label_ids


def load_task(clue_dir: str | Path, task_cfg) -> tuple[list[str], Split, Split]:
    """Label ids, train and dev splits of a task, truncated as the task config says."""
    folder = task_dir(clue_dir, task_cfg)
    label_ids, fmt = label_ids_of(folder, task_cfg), task_format(task_cfg)
    train = read_split(
        folder / task_cfg.get("train_file", "train.json"), label_ids, limit=task_cfg.max_train_samples, fmt=fmt
    )
    dev = read_split(folder / task_cfg.get("dev_file", "dev.json"), label_ids, limit=task_cfg.max_dev_samples, fmt=fmt)
    return label_ids, train, dev
