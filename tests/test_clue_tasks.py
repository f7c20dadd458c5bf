"""CLUE's pair and WSC tasks: the loaders on fixtures in each task's format, pair encoding,
WSC marking as CLUE's baseline does it, the token cache key, one-line errors, each task end
to end with the tiny model, prediction files and `make submit`'s zip."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from bert4keras.tokenizers import Tokenizer

from experiments import PROJECT_ROOT
from experiments.commands.run import run
from experiments.config import compose
from experiments.data import batching, cache, loaders
from experiments.errors import UserError
from experiments.model import tokenizer as tokenizers
from tests.helpers.clue import tiny_overrides, write_jsonl
from tests.helpers.clue_tasks import DASHES, NEW_TASKS, NLI, make_clue_tasks

N_TRAIN, N_DEV, N_TEST = 100, 40, 20
LABELS = {"afqmc": ["0", "1"], "cmnli": NLI, "ocnli": NLI, "csl": ["0", "1"], "cluewsc2020": ["true", "false"]}
PREDICTION_FILES = {
    "afqmc": ["afqmc_predict.json"],
    "cmnli": ["cmnli_predict.json"],
    "ocnli": ["ocnli_50k_predict.json"],
    "csl": ["csl_predict.json"],
    "cluewsc2020": ["cluewsc11_predict.json", "cluewsc10_predict.json"],
}


@pytest.fixture(scope="module")
def clue(tmp_path_factory):
    return make_clue_tasks(tmp_path_factory.mktemp("tasks") / "clue", N_TRAIN, N_DEV, N_TEST)


def task_cfg(task, clue_dir, results=Path("/nonexistent"), **extra):
    return compose(tiny_overrides(clue_dir, results, task, extra={"task.num_labels": len(LABELS[task]), **extra}))


def lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- loaders ---------------------------------------------------------------------------------


@pytest.mark.parametrize("task", NEW_TASKS)
def test_loaders_read_each_format(clue, task):
    cfg = task_cfg(task, clue)
    label_ids, train, dev = loaders.load_task(clue, cfg.task)
    assert label_ids == LABELS[task]
    skipped = DASHES.get(task, (0, 0))
    assert (train.skipped, dev.skipped) == skipped
    assert (len(train.texts), len(dev.texts)) == (N_TRAIN - skipped[0], N_DEV - skipped[1])
    folder = clue / cfg.task.dir
    raw = [r for r in lines(folder / cfg.task.train_file) if r["label"] != "-"]
    assert [label_ids[i] for i in train.labels] == [r["label"] for r in raw]
    if task == "csl":  # keywords joined by spaces (segment 0), then the abstract (segment 1)
        assert train.texts == [" ".join(r["keyword"]) for r in raw] and train.texts_b == [r["abst"] for r in raw]
    elif task == "cluewsc2020":  # one text, spans marked
        noun, pronoun = raw[0]["target"]["span1_text"], raw[0]["target"]["span2_text"]
        assert train.texts[0] == raw[0]["text"].replace(noun, f"_{noun}_", 1).replace(f"，{pronoun}", f"，[{pronoun}]")
        assert train.texts_b is None
    else:
        assert train.texts == [r["sentence1"] for r in raw] and train.texts_b == [r["sentence2"] for r in raw]
    test = loaders.read_split(folder / "test.json", label_ids, labelled=False, fmt=loaders.task_format(cfg.task))
    assert test.ids == list(range(N_TEST)) and (test.labels == -1).all()


def test_skipped_lines_are_logged(clue, caplog):
    with caplog.at_level("INFO", logger="experiments.data.loaders"):
        loaders.load_task(clue, task_cfg("cmnli", clue).task)
    assert "train.json: skipped 10 lines labelled '-' (task.skip_labels)" in caplog.text
    assert "dev.json: skipped 4 lines labelled '-'" in caplog.text


def baseline_mark(text, t):
    """CLUE's baseline (baselines/models/classifier_utils.py, WSCProcessor._create_examples), as it is."""
    chars, q, lq, p, lp = list(text), t["span1_index"], len(t["span1_text"]), t["span2_index"], len(t["span2_text"])
    if p > q:
        chars.insert(q, "_")
        chars.insert(q + lq + 1, "_")
        chars.insert(p + 2, "[")
        chars.insert(p + lp + 2 + 1, "]")
    else:
        chars.insert(p, "[")
        chars.insert(p + lp + 1, "]")
        chars.insert(q + 2, "_")
        chars.insert(q + lq + 2 + 1, "_")
    return "".join(chars)


@pytest.mark.parametrize(
    "text,span1,span2,marked",
    [
        ("小明把书放在桌子上，它很重。", "书", "它", "小明把_书_放在桌子上，[它]很重。"),  # pronoun after the noun
        ("它很重，小明还是把书放在桌子上。", "书", "它", "[它]很重，小明还是把_书_放在桌子上。"),  # pronoun first
        ("小猫他们都喜欢。", "小猫", "他们", "_小猫_[他们]都喜欢。"),  # adjacent spans
        ("他说张三打了他。", "张三", "他", "[他]说_张三_打了他。"),  # the first of two matches: index 0
    ],
)
def test_wsc_marking_is_clues_baseline(text, span1, span2, marked):
    target = {
        "span1_text": span1,
        "span1_index": text.index(span1),
        "span2_text": span2,
        "span2_index": text.index(span2),
    }
    assert loaders.mark_spans(text, target, "f:1") == baseline_mark(text, target) == marked


# --- pair encoding -----------------------------------------------------------------------------


def kept_lengths(a: int, b: int, budget: int) -> tuple[int, int]:
    """Reference: drop one token of the longer text (the first on a tie) until a + b fits."""
    while a + b > budget:
        if a >= b:
            a -= 1
        else:
            b -= 1
    return a, b


@pytest.mark.parametrize("a,b,max_length", [(10, 4, 12), (6, 6, 11), (3, 9, 10), (5, 5, 64), (1, 30, 8)])
def test_pair_encoding_segments_and_longer_first_truncation(a, b, max_length):
    first, second = "甲乙丙丁戊己庚辛壬癸" * 3, "子丑寅卯辰巳午未申酉戌亥" * 3
    first, second = first[:a], second[:b]
    vocab = tokenizers.char_vocab([first + second])
    tokenizer = Tokenizer(vocab, do_lower_case=True)
    [ids], [segments] = batching.encode(tokenizer, [first], max_length, texts_b=[second])
    ka, kb = kept_lengths(a, b, max_length - 3)  # [CLS] a [SEP] b [SEP]
    expected = ["[CLS]", *first[:ka], "[SEP]", *second[:kb], "[SEP]"]
    assert ids.tolist() == [vocab[t] for t in expected]
    assert segments.tolist() == [0] * (ka + 2) + [1] * (kb + 1)
    assert len(ids) <= max_length


def test_pair_batches_carry_segment_ids():
    token_ids = [np.array([2, 7, 3, 8, 3], np.int32), np.array([2, 7, 3, 3], np.int32)]
    segment_ids = [np.array([0, 0, 0, 1, 1], np.int32), np.array([0, 0, 0, 1], np.int32)]
    [((ids, segments), _)] = batching.batches(token_ids, np.zeros(2, np.int32), 2, segment_ids=segment_ids)
    assert segments.tolist() == [[0, 0, 0, 1, 1], [0, 0, 0, 1, 0]]  # padding: segment 0
    assert ids.tolist() == [[2, 7, 3, 8, 3], [2, 7, 3, 3, 0]]


def test_cache_key_covers_both_fields_and_the_wsc_marking(tmp_path):
    source = tmp_path / "train.json"
    write_jsonl(source, [{"sentence1": "甲乙", "sentence2": "丙丁", "label": "0"}])
    tokenizer = Tokenizer(tokenizers.char_vocab(["甲乙丙丁_[]"]), do_lower_case=True)
    keys = {
        cache.cache_key(source, tokenizer, 16, ["甲乙"], ["丙丁"]),
        cache.cache_key(source, tokenizer, 16, ["甲乙"], ["丙"]),  # another second field
        cache.cache_key(source, tokenizer, 16, ["甲乙"], None),  # the first field alone
        cache.cache_key(source, tokenizer, 16, ["_甲_乙"], None),  # WSC marks
        cache.cache_key(source, tokenizer, 16, ["_甲_[乙]"], None),
    }
    assert len(keys) == 5
    (ids, segments), hit = cache.encode(tokenizer, ["甲乙"], 16, source, tmp_path / "c", texts_b=["丙丁"])
    (ids2, segments2), hit2 = cache.encode(tokenizer, ["甲乙"], 16, source, tmp_path / "c", texts_b=["丙丁"])
    assert (hit, hit2) == (False, True)
    assert ids2[0].tolist() == ids[0].tolist() and segments2[0].tolist() == segments[0].tolist() == [0] * 4 + [1] * 3


# --- one-line errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task,row,message",
    [
        ("afqmc", {"sentence1": "甲", "label": "0"}, r"train\.json:2: the line has no 'sentence2' field"),
        (
            "afqmc",
            {"sentence1": "甲", "sentence2": "乙", "label": "2"},
            r"train\.json:2: label '2' is not in configs/task/afqmc\.yaml: labels; valid ids: 0, 1",
        ),
        (
            "cmnli",
            {"sentence1": "甲", "sentence2": "乙", "label": "maybe"},
            r"train\.json:2: label 'maybe' is not in .*valid ids: contradiction, entailment, neutral",
        ),
        ("ocnli", {"sentence1": "甲", "sentence2": "乙"}, r"train\.50k\.json:2: the line has no 'label' field"),
        ("csl", {"id": 1, "abst": "摘要", "label": "1"}, r"train\.json:2: the line has no 'keyword' field"),
        (
            "cluewsc2020",
            {"idx": 1, "text": "小明说他饿了。", "label": "true"},
            r"train\.json:2: the line has no 'target'",
        ),
        (
            "cluewsc2020",
            {
                "idx": 1,
                "text": "小明说他饿了。",
                "label": "true",
                "target": {"span1_text": "小明", "span1_index": 0, "span2_text": "他", "span2_index": 4},
            },
            (
                r"train\.json:2: span2_text '他' is not at span2_index 4 of the text "
                r"\(found '饿' there\); fix the line's target"
            ),
        ),
        (
            "cluewsc2020",
            {
                "idx": 1,
                "text": "小明说他饿了。",
                "label": "true",
                "target": {"span1_text": "小明", "span2_text": "他", "span2_index": 3},
            },
            r"train\.json:2: the line's target has no 'span1_index' field",
        ),
    ],
)
def test_bad_lines_name_file_line_and_fix(clue, tmp_path, task, row, message):
    cfg = task_cfg(task, tmp_path)
    folder = tmp_path / cfg.task.dir
    good = lines(clue / cfg.task.dir / cfg.task.train_file)[0]
    write_jsonl(folder / cfg.task.train_file, [good, row])
    write_jsonl(folder / "dev.json", [good])
    with pytest.raises(UserError, match=message) as err:
        loaders.load_task(tmp_path, cfg.task)
    assert "\n" not in str(err.value)


# --- end to end: a tiny run per task, `make submit` ---------------------------------------------


@pytest.fixture(scope="module")
def tiny_runs(clue, tmp_path_factory):
    results = tmp_path_factory.mktemp("runs") / "results"
    recs = {task: run(task_cfg(task, clue, results, **{"trainer.epochs": 1})) for task in NEW_TASKS}
    return results, recs


@pytest.mark.slow
@pytest.mark.parametrize("task", NEW_TASKS)
def test_each_task_end_to_end(tiny_runs, task):
    _, recs = tiny_runs
    record = recs[task]
    skipped = DASHES.get(task, (0, 0))
    assert record["num_labels"] == len(LABELS[task])
    assert record["skipped_lines"] == {"train": skipped[0], "dev": skipped[1]}
    assert (record["train_samples"], record["dev_samples"]) == (N_TRAIN - skipped[0], N_DEV - skipped[1])
    assert len(record["history"]) == 1 and 0 <= record["best_dev_acc"] <= 1


@pytest.mark.slow
def test_make_submit_zips_each_tasks_prediction_files(clue, tiny_runs):
    results, recs = tiny_runs
    out = subprocess.run(
        ["make", "-s", "-o", ".venv/.synced", "submit", f"RESULTS={results}", "MODEL=tiny", f"PY={sys.executable}"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    [zip_path] = (results / "submission").glob("submit_tiny_baseline_*.zip")
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        contents = {name: archive.read(name).decode("utf-8") for name in names}
    assert sorted(names) == sorted(sum(PREDICTION_FILES.values(), []))  # at the zip's top level
    for task, files in PREDICTION_FILES.items():
        for name, test_file in zip(files, ["test.json", "test1.0.json"]):
            rows = [json.loads(line) for line in contents[name].splitlines()]
            test_ids = [r.get("id", r.get("idx")) for r in lines(clue / f"{task}_public" / test_file)]
            assert [r["id"] for r in rows] == test_ids  # test-file order
            assert all(set(r) == {"id", "label"} and r["label"] in LABELS[task] for r in rows)
            assert f"in:      {name}" in out.stdout
    for name in ["tnews11_predict.json", "tnews10_predict.json", "iflytek_predict.json"]:
        assert f"missing: {name}" in out.stdout and "no complete" in out.stdout


@pytest.mark.slow
def test_submit_named_runs_and_wrong_choices(tiny_runs, tmp_path):
    from experiments.commands import submit

    results, _ = tiny_runs
    with pytest.raises(UserError, match="no complete run of method=fgm, model=tiny"):
        submit.submit(results, method="fgm", model="tiny")
    [afqmc_run] = (results / "runs").glob("afqmc_*.json")
    with pytest.raises(UserError, match="a second afqmc run"):
        submit.submit(results, runs=[str(afqmc_run), str(afqmc_run)])


@pytest.mark.slow
def test_a_later_test_file_that_is_absent_is_skipped(clue, tiny_runs, tmp_path, capsys):
    from experiments.commands import predict

    results, _ = tiny_runs
    [wsc_run] = (results / "runs").glob("cluewsc2020_*.json")
    extra = clue / "cluewsc2020_public" / "test1.0.json"
    extra.rename(tmp_path / "test1.0.json")
    try:
        written = predict.predict(wsc_run, out=tmp_path / "out")
    finally:
        (tmp_path / "test1.0.json").rename(extra)
    assert [p.name for p in written] == ["cluewsc11_predict.json"]
    assert [r["id"] for r in lines(written[0])] == list(range(N_TEST))
    assert "test1.0.json: not there, so no cluewsc10_predict.json" in capsys.readouterr().out
