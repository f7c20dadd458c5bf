"""CLUE loaders on fixtures in both tasks' formats and, where ../shared has it, the real files."""

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from experiments.data import batching, loaders
from experiments.errors import UserError
from tests.helpers.clue import SHARED_BERT, SHARED_CLUE, requires_shared, write_jsonl


def task_cfg(name, num_labels, **kw):
    return OmegaConf.create(
        {
            "name": name,
            "dir": f"{name}_public",
            "num_labels": num_labels,
            "max_train_samples": None,
            "max_dev_samples": None,
            **kw,
        }
    )


def test_tnews_format_maps_labels_by_position(tmp_path):
    folder = tmp_path / "tnews_public"
    write_jsonl(
        folder / "labels.json",
        [
            {"label": "100", "label_desc": "news_story"},
            {"label": "102", "label_desc": "news_entertainment"},
            {"label": "116", "label_desc": "news_game"},
        ],
    )
    rows = [
        {"label": "116", "label_desc": "news_game", "sentence": "王者荣耀", "keywords": ""},
        {"label": "100", "label_desc": "news_story", "sentence": "故事", "keywords": "a,b"},
    ]
    write_jsonl(folder / "train.json", rows)
    write_jsonl(folder / "dev.json", rows[:1])
    labels, train, dev = loaders.load_task(tmp_path, task_cfg("tnews", 3))
    assert labels == ["100", "102", "116"]
    assert train.texts == ["王者荣耀", "故事"]
    assert train.labels.tolist() == [2, 0]
    assert dev.labels.tolist() == [2]


def test_iflytek_format_and_sample_limits(tmp_path):
    folder = tmp_path / "iflytek_public"
    write_jsonl(folder / "labels.json", [{"label": str(i), "label_des": f"类{i}"} for i in range(3)])
    write_jsonl(
        folder / "train.json", [{"label": str(i % 3), "label_des": "x", "sentence": f"句子{i}"} for i in range(10)]
    )
    # Real IFLYTEK sentences hold U+2028 (LINE SEPARATOR): it must not split a line.
    write_jsonl(folder / "dev.json", [{"label": "1", "label_des": "x", "sentence": "开\u2028发"}] * 4)
    labels, train, dev = loaders.load_task(tmp_path, task_cfg("iflytek", 3, max_train_samples=4, max_dev_samples=2))
    assert train.texts == ["句子0", "句子1", "句子2", "句子3"]  # the first N, in file order
    assert train.labels.tolist() == [0, 1, 2, 0]
    assert dev.texts == ["开\u2028发"] * 2


def test_unlabelled_test_split_keeps_ids(tmp_path):
    write_jsonl(tmp_path / "test.json", [{"id": 7, "sentence": "甲"}, {"id": 8, "sentence": "乙"}])
    split = loaders.read_split(tmp_path / "test.json", ["0"], labelled=False)
    assert split.ids == [7, 8] and split.labels.tolist() == [-1, -1]


def test_batches_pad_per_batch_and_shuffle_reproducibly():
    seqs = [np.arange(1, n + 1, dtype=np.int32) for n in (3, 5, 2, 4, 6)]
    labels = np.arange(5, dtype=np.int32)
    plain = list(batching.batches(seqs, labels, 2))
    assert [b[0][0].shape for b in plain] == [(2, 5), (2, 4), (1, 6)]
    assert plain[0][0][0].tolist() == [[1, 2, 3, 0, 0], [1, 2, 3, 4, 5]]
    assert not plain[0][0][1].any()  # segment ids all 0
    a = [b[1].tolist() for b in batching.batches(seqs, labels, 2, np.random.default_rng([3, 1]))]
    b = [b[1].tolist() for b in batching.batches(seqs, labels, 2, np.random.default_rng([3, 1]))]
    assert a == b and sorted(sum(a, [])) == list(range(5))


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"label": "0", "sentence": "a"}\nnot json\n', r"train\.json:2: not a JSON object"),
        ('{"label": "0"}\n', r"train\.json:1: the line has no 'sentence' field"),
        ('{"label": "9", "sentence": "a"}\n', r"train\.json:1: label '9' is not in labels\.json; valid ids: 0, 1"),
        ("\n\n", r"train\.json: the file is empty"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, content, message):
    (tmp_path / "train.json").write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        loaders.read_split(tmp_path / "train.json", ["0", "1"])


def test_non_utf8_file_names_the_line(tmp_path):
    (tmp_path / "train.json").write_bytes(b'{"label": "0", "sentence": "a"}\n' + "坏".encode("gbk"))
    with pytest.raises(UserError, match=r"train\.json:2: not UTF-8"):
        loaders.read_split(tmp_path / "train.json", ["0"])


def test_missing_task_folder_says_make_data(tmp_path):
    with pytest.raises(UserError, match=r"tnews_public: CLUE tnews data folder not found; run `make data TASKS=tnews`"):
        loaders.load_task(tmp_path, task_cfg("tnews", 15))


@requires_shared(SHARED_CLUE / "tnews_public")
def test_real_tnews_files():
    labels, train, dev = loaders.load_task(SHARED_CLUE, task_cfg("tnews", 15))
    assert len(labels) == 15 and "105" not in labels and "111" not in labels
    assert len(train.texts) == 53_360 and len(dev.texts) == 10_000
    assert set(train.labels.tolist()) == set(range(15))
    first = json.loads((SHARED_CLUE / "tnews_public" / "dev.json").open(encoding="utf-8").readline())
    assert dev.texts[0] == first["sentence"] and labels[dev.labels[0]] == first["label"]
    test = loaders.read_split(SHARED_CLUE / "tnews_public" / "test.json", labels, labelled=False)
    assert test.ids == list(range(10_000))


@requires_shared(SHARED_CLUE / "iflytek_public")
def test_real_iflytek_labels_and_dev():
    labels = loaders.read_label_ids(SHARED_CLUE / "iflytek_public" / "labels.json")
    assert labels == [str(i) for i in range(119)]
    dev = loaders.read_split(SHARED_CLUE / "iflytek_public" / "dev.json", labels)
    assert len(dev.texts) == 2_599
    # The majority class of dev is 14.9% (../shared/README.md's figure for judging runs).
    assert np.bincount(dev.labels).max() / len(dev.labels) == pytest.approx(0.149, abs=0.001)


@requires_shared(SHARED_BERT / "vocab.txt")
def test_real_vocab_tokenizes_lower_cased_with_max_length():
    from bert4keras.tokenizers import Tokenizer

    tokenizer = Tokenizer(str(SHARED_BERT / "vocab.txt"), do_lower_case=True)
    ids, segments = batching.encode(tokenizer, ["NBA球星" * 100, "足球"], max_length=128)
    assert segments is None  # single texts: segment ids all 0
    assert len(ids[0]) == 128 and ids[0][0] == 101 and ids[0][-1] == 102  # [CLS] ... [SEP]
    assert tokenizer.id_to_token(int(ids[0][1])) == "nba"
    assert len(ids[1]) == 4
