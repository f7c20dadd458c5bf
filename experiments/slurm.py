"""Our side of ``hydra/launcher=slurm`` (hydra-submitit-launcher), in the process that submits.

While a sweep waits for its jobs, submitit asks ``sacct`` for their states every few seconds to a
minute. On a cluster without job accounting (``AccountingStorageType=accounting_storage/none``, no
slurmdbd) every call fails and submitit logs "Bypassing sacct error ..., status may be inaccurate"
each time. Nothing is wrong: submitit knows that a job has ended from the result file the job
writes, so the sweep still collects every run. :func:`fold_sacct_errors` keeps the first of these
lines, with that explanation, and drops the repeats.

Nothing here imports TensorFlow or submitit.
"""

from __future__ import annotations

import logging

SACCT_ERROR = "Bypassing sacct error"
SACCT_NOTE = ("[sacct fails where the cluster keeps no job accounting; the sweep then learns that a job "
              "has ended from its result file, which is enough. Further sacct errors are not shown.]")


class FoldSacctErrors(logging.Filter):
    """Pass submitit's first sacct error (with :data:`SACCT_NOTE` appended), drop the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if SACCT_ERROR not in message:
            return True
        self.seen += 1
        if self.seen > 1:
            return False
        record.msg, record.args = f"{message} {SACCT_NOTE}", ()
        return True


def fold_sacct_errors() -> None:
    """Install :class:`FoldSacctErrors` on submitit's logger (once). A filter on the logger acts
    before its handlers and before propagation, so it covers submitit's own handler and Hydra's."""
    logger = logging.getLogger("submitit")
    if not any(isinstance(f, FoldSacctErrors) for f in logger.filters):
        logger.addFilter(FoldSacctErrors())
