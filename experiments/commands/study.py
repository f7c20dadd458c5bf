"""make evidence's last step: a preregistered study's tuning choice (tuning.md) or its paired tests
with Holm's correction (analysis.md), from the records of a folder.

    python -m experiments.commands.study tuning|main <folder>
"""

from __future__ import annotations

import sys
from pathlib import Path

from experiments import records
from experiments.commands import cli
from experiments.errors import UserError
from experiments.report.preregistered import frame, main_markdown, tuning_markdown


def write(step: str, folder: Path) -> Path:
    """``folder``/tuning.md (step "tuning") or ``folder``/analysis.md (step "main") from ``folder``/runs/."""
    everyone = frame(records.load_records(folder, records.DONE))
    if not (everyone.status == records.COMPLETE).any():
        raise UserError(f"{folder / 'runs'}: no complete run records; run the study's sweep first (make evidence)")
    out = folder / ("tuning.md" if step == "tuning" else "analysis.md")
    records.write_text_atomic(out, tuning_markdown(everyone) if step == "tuning" else main_markdown(everyone))
    return out


def main(argv=None) -> int:
    p = cli.parser("experiments.commands.study", __doc__)
    p.add_argument("step", choices=["tuning", "main"], help="tuning: tuning.md (the rule's choice); main: analysis.md")
    p.add_argument("folder", type=Path, help="the folder whose runs/ holds the step's records")
    return cli.main(p, lambda args: print(write(args.step, args.folder)), argv)


if __name__ == "__main__":
    sys.exit(main())
