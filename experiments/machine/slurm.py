"""Our side of ``hydra/launcher=slurm`` (hydra-submitit-launcher), in the submitting process and
in each job: :func:`fold_sacct_errors` keeps the first of submitit's "Bypassing sacct error" lines
(harmless on a cluster without job accounting: submitit learns a job ended from its result file)
and drops the repeats; :func:`exit_at_once_when_requeued` makes a time-limit requeue end the job's
process cleanly. Why each: docs/clusters.md. Nothing here imports TensorFlow; submitit only inside
a submitit job.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

SACCT_ERROR = "Bypassing sacct error"
SACCT_NOTE = (
    "[sacct fails where the cluster keeps no job accounting; the sweep then learns that a job "
    "has ended from its result file, which is enough. Further sacct errors are not shown.]"
)


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


def exit_at_once_when_requeued() -> None:
    """In a Slurm job of the sweep: after submitit's time-limit handler has requeued the job, end
    this process at once instead of raising ``SystemExit`` from the signal handler, wherever the main
    thread is (inside TensorFlow that once became a SystemError the sweep failed on: docs/clusters.md).
    Ending hard loses nothing: the run state changes only by atomic renames (train/run_state.py).
    Any other outcome of the handler (e.g. "timed-out too many times") passes through unchanged.
    """
    if "submitit" not in sys.modules:  # not started by submitit
        return
    from submitit.core.job_environment import JobEnvironment, SignalHandler

    number = signal.Signals[f"SIG{JobEnvironment.USR_SIG}"]
    requeue = signal.getsignal(number)
    if not isinstance(getattr(requeue, "__self__", None), SignalHandler):
        return

    def requeue_then_exit(signum, frame):
        try:
            requeue(signum, frame)
        except SystemExit as done:  # requeued: submitit wants this process gone
            logging.shutdown()  # flush the logs: os._exit skips that
            os._exit(done.code if isinstance(done.code, int) else 1)

    signal.signal(number, requeue_then_exit)
