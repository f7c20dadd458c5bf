"""The text attack's candidate characters (experiments/data/char_candidates.py): each source against the package
it is read from, the vocabulary and common-character filters. No TensorFlow."""

import importlib.metadata
from pathlib import Path

import opencc
import pytest
from pypinyin import Style, lazy_pinyin, pinyin

from experiments.data import char_candidates as cc
from experiments.errors import UserError

SHARED_VOCAB = Path(__file__).resolve().parents[2] / "shared" / "bert" / "chinese_L-12_H-768_A-12" / "vocab.txt"
TITLES = "华为发布新手机股票市场大涨体育比赛中国队获胜电影票房创纪录台湾旅游景点后来发现里面"


def vocab() -> set[str]:
    """The Chinese BERT vocabulary where ../shared has it, else every common character but a few."""
    if SHARED_VOCAB.is_file():
        return set(SHARED_VOCAB.read_text("utf-8").split("\n"))
    return (set(cc.common_characters()) - set("求囚")) | {"發", "後", "臺", "體"}


def pycorrector_lines(name: str) -> list[str]:
    path = Path(importlib.metadata.distribution("pycorrector").locate_file(f"pycorrector/data/{name}"))
    return path.read_text("utf-8").splitlines()


def test_the_common_list_is_pycorrectors_3500():
    common = cc.common_characters()
    lines = [line.strip() for line in pycorrector_lines("common_char_set.txt") if line.strip()]
    assert common == set(lines) and 3490 <= len(common) <= 3502
    assert {"的", "是", "球", "股"} <= common and "發" not in common


def test_every_candidate_is_in_the_vocabulary_and_common():
    words = vocab()
    table = cc.CandidateTable(cc.SOURCES, lambda ch: ch in words)
    found = 0
    for ch in TITLES:
        for cand, source in table(ch):
            found += 1
            assert cand in words and cand != ch
            if source == "traditional":
                assert ch in cc.common_characters() and cand == opencc.OpenCC("s2t").convert(ch)
            else:
                assert cand in cc.common_characters()
    assert found > 100


def test_homophones_have_the_same_toned_pinyin():
    table = cc.CandidateTable(("homophone",), lambda ch: True)
    checked = 0
    for ch in TITLES:
        for cand, source in table(ch):
            assert source == "homophone"
            assert lazy_pinyin(cand, style=Style.TONE) == lazy_pinyin(ch, style=Style.TONE)
            assert (
                pinyin(cand, style=Style.TONE, heteronym=True)[0][0]
                == pinyin(ch, style=Style.TONE, heteronym=True)[0][0]
            )
            checked += 1
    assert checked > 50
    # 行 has five readings; its homophones are those of the first, xíng (形, 型, ...), never of háng (航).
    hang = {c for c, _ in table("行")}
    assert {"形", "型"} <= hang and "航" not in hang


def test_look_alikes_share_a_line_of_the_same_stroke_set():
    groups = [set(line.split()) for line in pycorrector_lines("same_stroke.txt")]
    table = cc.CandidateTable(("visual",), lambda ch: True)
    pairs = [(ch, c) for ch in TITLES for c, _ in table(ch)]
    assert len(pairs) > 20
    for ch, c in pairs:
        assert any(ch in g and c in g for g in groups), (ch, c)
    assert {c for c, _ in table("股")} >= {"投", "设"}


def test_the_traditional_form_is_opencc_s2t():
    table = cc.CandidateTable(("traditional",), lambda ch: True)
    assert table("发") == (("發", "traditional"),)
    assert table("台") == (("臺", "traditional"),)
    assert table("的") == ()  # the same in both scripts: no candidate


def test_sources_switch_and_the_first_source_names_a_candidate():
    every = cc.CandidateTable(cc.SOURCES, lambda ch: True)
    only = {s: cc.CandidateTable((s,), lambda ch: True) for s in cc.SOURCES}
    for ch in "体是股发":
        union = {c for s in cc.SOURCES for c, _ in only[s](ch)}
        assert {c for c, _ in every(ch)} == union
        for c, source in every(ch):
            assert (c, source) in only[source](ch)


def test_only_cjk_characters_have_candidates():
    table = cc.CandidateTable(cc.SOURCES, lambda ch: True)
    assert [table(ch) for ch in "A1！ ，"] == [()] * 5


def test_bad_sources_are_refused():
    with pytest.raises(UserError, match="eval.text_attack.sources"):
        cc.CandidateTable(("sound",), lambda ch: True)
    with pytest.raises(UserError, match="eval.text_attack.sources"):
        cc.CandidateTable(("visual", "visual"), lambda ch: True)


def test_describe_names_the_package_versions():
    d = cc.CandidateTable(("homophone", "traditional"), lambda ch: True).describe()
    assert d == {
        "sources": ["homophone", "traditional"],
        "packages": {p: importlib.metadata.version(p) for p in ("opencc", "pycorrector", "pypinyin")},
    }
