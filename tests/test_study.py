"""experiments.commands.study: the preregistered study's tuning rule and its paired tests with Holm's
correction, against hand computations on made-up records."""

import json
import math
import subprocess
import sys

import pytest

from experiments import PROJECT_ROOT
from experiments.report import preregistered

PRE = "tnews_tiny_0123456789"


def rec(method, seed, acc, eps=None, pretrained=PRE, robust=None, status="complete"):
    model = {"name": "tiny", **({"pretrained": pretrained} if pretrained else {})}
    return {
        "status": status,
        "method": method,
        "seed": seed,
        "best_dev_acc": acc,
        "task": "tnews",
        "model": "tiny",
        "settings": {"model": model, "method": {"name": method, **({"epsilon": eps} if eps is not None else {})}},
        **({"robust_dev_acc": robust} if robust else {}),
    }


def test_holm_adjusts_step_down_and_keeps_the_order_given():
    assert preregistered.holm([0.04, 0.01]) == pytest.approx([0.04, 0.02])  # 0.01 x 2, then max(0.02, 0.04 x 1)
    assert preregistered.holm([0.03, 0.04]) == pytest.approx(
        [0.06, 0.06]
    )  # monotone: the second cannot fall below the first
    assert preregistered.holm([0.6, 0.001, 0.02]) == pytest.approx([0.6, 0.003, 0.04])
    assert preregistered.holm([0.7, 0.9]) == pytest.approx([1.0, 1.0])


def test_paired_differences_equal_the_t_formula():
    a, b = {0: 51.0, 1: 50.0, 2: 52.5, 3: 49.0}, {0: 50.0, 1: 50.5, 2: 50.5, 3: 48.0, 9: 1.0}  # seed 9 unpaired
    t = preregistered.paired(a, b)
    d = [1.0, -0.5, 2.0, 1.0]
    mean = sum(d) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 3)
    tstat = mean / (sd / 2)
    # t quantiles with 3 degrees of freedom (tables): 0.975 -> 3.182446, 0.9875 -> 4.176535
    assert t["n"] == 4 and t["seeds"] == [0, 1, 2, 3] and t["mean"] == pytest.approx(0.875)
    assert t["ci95"] == pytest.approx((mean - 3.182446 * sd / 2, mean + 3.182446 * sd / 2), abs=1e-5)
    assert t["ci975"] == pytest.approx((mean - 4.176535 * sd / 2, mean + 4.176535 * sd / 2), abs=1e-5)
    # two-sided p of t = 1.6977 with 3 df: the interval's edge at 0 is where p crosses 0.05
    assert 0.05 < t["p"] < 0.25 and tstat == pytest.approx(1.69775, abs=1e-4)
    edge = preregistered.paired({0: 3.0, 1: 1.0}, {0: 0.0, 1: 0.0})  # d = 3, 1: t = 2 / (sqrt(2) / sqrt(2)) = 2, 1 df
    assert edge["p"] == pytest.approx(1 - 2 * math.atan(2) / math.pi, abs=1e-9)  # Cauchy: t with 1 df


def test_the_tuning_rule_takes_the_best_mean_and_the_smaller_eps_within_0_05_points():
    runs = [
        rec("baseline", 100, 0.49),
        rec("baseline", 101, 0.50),
        rec("fgm", 100, 0.5000, 0.01),
        rec("fgm", 101, 0.5000, 0.01),  # mean 50.00
        rec("fgm", 100, 0.5004, 0.03),
        rec("fgm", 101, 0.5004, 0.03),  # 50.04: a tie -> 0.01
        rec("gp", 100, 0.4990, 0.01),
        rec("gp", 101, 0.5000, 0.01),  # 49.95
        rec("gp", 100, 0.5010, 0.1),
        rec("gp", 101, 0.5002, 0.1),  # 50.06: beyond the tie -> 0.1
        rec("gp", 100, 0.4900, 0.03),
        rec("gp", 101, 0.9, 0.03, status="diverged"),
    ]
    choice = preregistered.tuning_choice([r for r in runs if r["status"] == "complete"])
    assert choice["fgm"]["chosen"] == 0.01 and choice["gp"]["chosen"] == 0.1
    assert choice["gp"]["means"][0.03] == (pytest.approx(49.0), 1)


def main_grid():
    base = [0.50, 0.51, 0.49, 0.505, 0.50]
    fgm = [0.51, 0.52, 0.50, 0.515, 0.51]  # +1 point on every seed
    gp = [0.50, 0.505, 0.495, 0.50, 0.505]  # +0.0, -0.5, +0.5, -0.5, +0.5
    scratch = [0.49, 0.50, 0.48, 0.50, 0.49]
    runs = []
    for s in range(5):
        runs += [
            rec("baseline", s, base[s], robust={"0.02": 0.40, "0.1": 0.10 + 0.01 * s}),
            rec("fgm", s, fgm[s], 0.03, robust={"0.02": 0.42, "0.1": 0.12 + 0.01 * s}),
            rec("gp", s, gp[s], 0.1, robust={"0.02": 0.40 + 0.01 * (s % 2), "0.1": 0.10}),
            rec("baseline", s, scratch[s], pretrained=None, robust={"0.02": 0.41, "0.1": 0.15}),
        ]
    return runs


@pytest.mark.slow
def test_main_analysis_reports_holm_verdicts_attack_and_the_pretraining_gap(tmp_path):
    (tmp_path / "runs").mkdir()
    for i, r in enumerate(main_grid() + [rec("gp", 7, None, 0.1, status="diverged")]):
        (tmp_path / "runs" / f"{i:02d}.json").write_text(json.dumps(r))
    out = subprocess.run(
        [sys.executable, "-m", "experiments.commands.study", "main", str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "analysis.md").read_text()
    lines = text.splitlines()
    # FGM: +1.00 on every seed (zero spread): rejects, helps. GP: d = 0, -0.5, +0.5, -0.5, +0.5 (mean 0).
    fgm = next(line for line in lines if line.startswith("| fgm − baseline | 5 |"))
    assert "| +1.00 | [+1.00, +1.00] | [+1.00, +1.00] | 0 | 0 | helps |" in fgm
    gp = next(line for line in lines if line.startswith("| gp − baseline | 5 |"))
    assert "| +0.00 |" in gp and gp.endswith("| 1 | 1 | no detectable difference |")
    assert (
        "(1 diverged, left out)" in text
        and "| baseline, random init | – | 5 | 0 | 49.20 ± 0.84 |" in text
        and "| gp, pretrained | 0.1 | 5 | 1 | 50.10 ± 0.42 |" in text
    )
    assert "| fgm − baseline | +2.00 [+2.00, +2.00] (5) | +2.00 [+2.00, +2.00] (5) |" in text
    gap = next(line for line in lines if line.startswith("| clean best dev accuracy | 5 |"))
    assert gap.startswith("| clean best dev accuracy | 5 | +0.90 | [")  # 50.10 - 49.20
    assert "| under attack, ε=0.1 | 5 | -3.00 |" in text  # 12.00 mean - 15.00


@pytest.mark.slow
def test_a_folder_without_records_is_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "experiments.commands.study", "main", str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'runs'}: no complete run records; run the study's sweep first (make evidence)"
    ]


def attacked(record, acc, success, transfer=None):
    """``record`` with a text attack (accuracies in %) and, given a transfer accuracy, its transfer scoring."""
    text = {
        "sources": ["homophone", "visual", "traditional"],
        "budget": 0.1,
        "max_queries": 500,
        "max_samples": 2000,
        "random_baseline": True,
        "seed": 0,
        "clean_acc": 0.5,
        "acc": acc / 100,
        "success_rate": success / 100,
        "random": {"acc": 0.44},
        "changed_share_mean": 0.065,
        "queries_mean": 28.5,
    }
    extra = {"text_attack_transfer": {"base": {"acc": transfer / 100, "transfer_rate": 0.5}}} if transfer else {}
    return {**record, "text_attack": text, **extra}


def test_the_text_attack_analysis_tests_the_primary_pair_with_holm_and_describes_the_rest(tmp_path):
    from experiments.commands import study

    base = [12.0, 13.0, 11.0, 12.0, 12.0]
    gp_d = [1.0, -1.0, 1.0, -1.0, 0.0]  # mean 0
    (tmp_path / "runs").mkdir()
    runs = []
    for s in range(5):
        runs += [
            attacked(rec("baseline", s, 0.5), base[s], 75.0),
            attacked(rec("fgm", s, 0.5, 0.03), base[s] + 2, 71.0, transfer=30.0 + s),  # +2 on every seed
            attacked(rec("gp", s, 0.5, 0.1), base[s] + gp_d[s], 75.0, transfer=30.0),
            attacked(rec("baseline", s, 0.49, pretrained=None), 14.0, 70.0, transfer=20.0),
            rec("fgm", s + 10, 0.5, 0.03),  # not attacked: left out
        ]
    for i, r in enumerate(runs):
        (tmp_path / "runs" / f"{i:02d}.json").write_text(json.dumps(r))
    text = study.write("text-attack", tmp_path).read_text()
    lines = text.splitlines()
    fgm = next(line for line in lines if line.startswith("| fgm − baseline | 5 |"))
    assert fgm.startswith("| fgm − baseline | 5 | +2.00 | [+2.00, +2.00] |") and fgm.endswith("| helps |")
    assert float(fgm.split("|")[6]) < 1e-9 and float(fgm.split("|")[7]) < 1e-9  # p, then Holm's 2 x p
    gp = next(line for line in lines if line.startswith("| gp − baseline | 5 |"))
    assert gp.startswith("| gp − baseline | 5 | +0.00 |") and gp.endswith("| 1 | 1 | no detectable difference |")
    assert "from the 20 complete, text-attacked run records" in text
    assert "| fgm − baseline | success rate | 5 | -4.00 | [-4.00, -4.00] |" in text
    assert "| baseline: pretrained − random init | under the text attack | 5 | -2.00 |" in text
    # transfer: FGM's 30..34 (mean 32) against the baseline's 12.00 on its own texts: +20.00 on average
    assert "| fgm, pretrained | 5 | 32.00 | [" in text and "| 50.00 | [50.00, 50.00] | +20.00 [" in text
    assert "| baseline, random init | 5 | 20.00 | [20.00, 20.00] | 50.00 |" in text
    assert "sources [homophone, visual, traditional], budget 0.1, max_queries 500" in text


def test_the_reading_sample_draws_from_the_successes_pooled_in_seed_and_index_order():
    import random

    texts = {
        s: [{"index": i, "status": "success" if (i + s) % 3 else "failed"} for i in reversed(range(40))]
        for s in (2, 0, 1)
    }
    pool = [(s, i) for s in (0, 1, 2) for i in range(40) if (i + s) % 3]  # written out independently
    drawn = preregistered.reading_sample(texts, k=50, seed=28)
    assert [(r["seed"], r["index"]) for r in drawn] == random.Random(28).sample(pool, 50)
    with pytest.raises(preregistered.UserError, match="80 successful attacks to draw 81"):
        preregistered.reading_sample(texts, k=81)


def test_the_reading_table_counts_the_judgements():
    row = {"seed": 1, "index": 7, "text": "火箭", "adversarial_text": "火舰", "label": "103", "prediction": "116"}
    row["positions"] = [1]
    row["substitutions"] = [{"from": "箭", "to": "舰", "source": "homophone"}]
    other = {**row, "index": 8}
    judged = {"1:7": {"same": True, "note": "a typo a reader slides past"}}
    text = preregistered.reading_markdown([row, other], {"103": "news_sports"}, judged, texts=True)
    assert "**1 of 1 judged the same headline with the same label.**" in text
    expected = "| 1 | 1 | 7 | 火箭 | 火舰 | 箭→舰 (homophone) | news_sports | 116 | same: a typo a reader slides past |"
    assert expected in text and text.rstrip().endswith("| 116 | not read yet |")
    committed = preregistered.reading_markdown([row, other], {"103": "news_sports"}, judged)  # no CLUE text
    assert "火箭" not in committed and "| 1 | 1 | 7 | 1 | 箭→舰 (homophone) | news_sports | 116 | same:" in committed


def test_study_sample_reads_the_pretrained_baselines_texts_and_keeps_the_titles_out_of_examples_md(tmp_path):
    from experiments.commands import study

    (tmp_path / "runs").mkdir()
    texts = tmp_path / "texts"
    texts.mkdir()
    for s in range(2):
        base = attacked(rec("baseline", s, 0.5), 12.0, 75.0)
        base["text_attack"]["adversarial_file"] = f"base{s}.text_attack.jsonl"
        (tmp_path / "runs" / f"base{s}.json").write_text(json.dumps(base))
        (tmp_path / "runs" / f"fgm{s}.json").write_text(json.dumps(attacked(rec("fgm", s, 0.5, 0.03), 13.0, 70.0)))
        rows = [
            {
                "index": i,
                "status": "success",
                "text": f"标题{s}{i}",
                "adversarial_text": f"标提{s}{i}",
                "label": "103",
                "prediction": "116",
                "positions": [1],
                "substitutions": [{"from": "题", "to": "提", "source": "homophone"}],
            }
            for i in range(30)
        ]
        (texts / f"base{s}.text_attack.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    judged = {f"{s}:{i}": {"same": i % 2 == 0, "note": "x"} for s in range(2) for i in range(30)}
    (tmp_path / "judgements.json").write_text(json.dumps(judged))
    import random

    drawn = random.Random(28).sample([(s, i) for s in range(2) for i in range(30)], 50)  # the pool, written out
    same = sum(i % 2 == 0 for _, i in drawn)
    labels = tmp_path / "labels.json"
    labels.write_text('{"label": "103", "label_desc": "news_sports"}\n{"label": "116", "label_desc": "news_game"}\n')
    out = study.sample(tmp_path, texts, labels)
    text = out.read_text()
    assert out.name == "examples.md" and "标题" not in text and "标提" not in text
    assert text.count("| 题→提 (homophone) | news_sports | news_game |") == 50
    assert f"**{same} of 50 judged the same headline with the same label.**" in text
    with_texts = study.sample(tmp_path, texts, labels, with_texts=True).read_text()
    assert with_texts.count("| 标题") == 50
    (texts / "base1.text_attack.jsonl").unlink()
    with pytest.raises(
        preregistered.UserError, match="base1.text_attack.jsonl: no adversarial texts of the pretrained"
    ):
        study.sample(tmp_path, texts, labels)
