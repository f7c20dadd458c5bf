"""Our side of ``hydra/launcher=slurm`` (hydra-submitit-launcher): in the process that submits,
and in each job.

While a sweep waits for its jobs, submitit asks ``sacct`` for their states every few seconds to a
minute. On a cluster without job accounting (``AccountingStorageType=accounting_storage/none``, no
slurmdbd) every call fails and submitit logs "Bypassing sacct error ..., status may be inaccurate"
each time. Nothing is wrong: submitit knows that a job has ended from the result file the job
writes, so the sweep still collects every run. :func:`fold_sacct_errors` keeps the first of these
lines, with that explanation, and drops the repeats.

In each job, :func:`exit_at_once_when_requeued` makes the requeue on a time limit end the job's
process cleanly.

Nothing here imports TensorFlow; submitit only inside a submitit job.
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
    this process at once instead of raising ``SystemExit`` from the signal handler.

    submitit's handler (``SignalHandler.checkpoint_and_try_requeue``) requeues the job and then
    calls ``sys.exit(-1)``, so the exception is raised wherever the main thread happens to be. In
    the middle of TensorFlow's C++ calling back into Python, CPython turned it into
    ``SystemError: Objects/listobject.c:338: bad argument to internal function``, an ordinary
    exception: Hydra stored it as the job's result, submitit pickled it, and the waiting sweep failed
    although Slurm had requeued the run (seen once in tests/test_slurm.py). The run loses nothing by
    ending hard: its state on disk changes only by atomic renames at the end of each epoch
    (experiments/train/run_state.py), as when Slurm kills it. Any other outcome of the handler (e.g.
    "timed-out too many times", which must reach the sweep as an error) passes through unchanged.
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
