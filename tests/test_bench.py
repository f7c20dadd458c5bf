"""`make bench` (experiments/commands/bench.py) on a small shape: what it writes and prints, and its
arguments' one error path. Nothing here judges a time: the figures are make bench's to report."""

from __future__ import annotations

import json
import statistics

import pytest
import tensorflow as tf

from experiments.commands import bench
from experiments.machine import environment

SMALL = [
    "--layers",
    "1",
    "--seq",
    "8",
    "--batch",
    "2",
    "--warmup",
    "1",
    "--rounds",
    "2",
    "--steps",
    "1",
    "--attack-texts",
    "16",
]


@pytest.mark.slow
def test_bench_writes_each_methods_seconds_and_ratios(tmp_path, capsys):
    out = tmp_path / "latest.json"
    code = bench.main([*SMALL, "--methods", "baseline,fgm,gp", "--out", str(out), "trainer.precision=float32"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["command"].endswith("--out " + str(out) + " trainer.precision=float32")
    assert result["precision"] == "float32" and result["jit_compile"] is False
    assert (result["shape"]["vocab"], result["shape"]["hidden"], result["shape"]["layers"]) == (21128, 768, 1)
    assert result["steps"] == {"baseline": 2, "fgm": 2, "gp": 2}  # rounds x steps, each timed
    for name, times in result["seconds_per_step_all"].items():
        assert result["seconds_per_step"][name] == pytest.approx(statistics.median(times))
        assert result["spread"][name] == [min(times), max(times)]
    base = result["seconds_per_step"]["baseline"]
    assert result["fgm_over_baseline"] == pytest.approx(result["seconds_per_step"]["fgm"] / base)
    assert result["gp_over_baseline"] == pytest.approx(result["seconds_per_step"]["gp"] / base)
    # The merged optimisations' "before vs now" timings are gone.
    assert not {"data_pipeline", "evaluation"} & set(result)
    machine = result["machine"]
    assert machine["tensorflow"] == tf.__version__
    assert machine["vector_extensions"] == environment.vector_extensions() != "unknown"
    attack = result["attack"]
    assert (attack["texts"], attack["steps"]) == (16, 10)
    estimate = attack["iflytek_estimate"]  # 50 epochs of 380 steps + 2599 / 96 per dev evaluation
    assert estimate["run_steps"] == pytest.approx(50 * (380 + 2599 / 96))
    printed = capsys.readouterr().out.splitlines()
    assert f"({machine['vector_extensions']})" in printed[0] and machine["cpu"] in printed[0]
    assert printed[1] == "| method | steps | s/step (median) | min..max | x baseline | CPU s/step | CPU x baseline |"
    fgm = next(line for line in printed if line.startswith("| fgm | 2 | "))
    assert f"| {result['fgm_over_baseline']:.2f} |" in fgm
    assert printed[-1] == f"written: {out}"


@pytest.mark.parametrize(
    "args, message",
    [
        (["trainer.precision=float16"], "error: trainer.precision=float16 is invalid: it must be float32 or "),
        (["model=bert_huge"], "error: unknown model 'bert_huge' in 'model=bert_huge'; choose from "),
        (["--methods", "fgm"], "error: --methods must include baseline and name only baseline, fgm, "),
        (
            ["float16"],
            "error: 'float16': not an option of python -m experiments.commands.bench nor a key=value override",
        ),
    ],
)
def test_a_mistake_is_one_line_and_exit_code_2(capsys, args, message):
    with pytest.raises(SystemExit) as exit:
        bench.main([*SMALL, *args])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.startswith(message) and err.count("\n") == 1, err
