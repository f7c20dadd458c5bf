"""make evidence's last step: a preregistered study's tuning choice (tuning.md) or its paired tests
with Holm's correction (analysis.md), from the records of a folder.

    python -m experiments.commands.study tuning|main <folder>
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments import records
from experiments.errors import UserError, reported
from experiments.report.preregistered import frame, main_markdown, tuning_markdown


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.commands.study", description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=["tuning", "main"], help="tuning: tuning.md (the rule's choice); main: analysis.md")
    p.add_argument("folder", type=Path, help="the folder whose runs/ holds the step's records")
    args = p.parse_args(argv)
    with reported():
        everyone = frame(records.load_records(args.folder, records.DONE))
        if not (everyone.status == records.COMPLETE).any():
            raise UserError(f"{args.folder / 'runs'}: no complete run records; run the study's sweep first (make evidence)")
        text = tuning_markdown(everyone) if args.step == "tuning" else main_markdown(everyone)
        out = args.folder / ("tuning.md" if args.step == "tuning" else "analysis.md")
        records.write_text_atomic(out, text)
        print(out)


if __name__ == "__main__":
    main()
