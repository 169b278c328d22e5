"""Stopping cleanly on Ctrl-C (SIGINT) and on SIGTERM (cluster schedulers, cloud preemption).

Inside `stop_requests()`, a first signal is only noted: the loop finishes the current step,
writes the checkpoint and stops (`Trainer.train`). A second signal stops at once. Under
`torchrun` every rank gets the signal (torchrun forwards it); `agreed_stop` makes all ranks
stop after the same iteration, so their checkpoints and collectives stay in step.

Exit status after a clean stop: SIGINT raises `KeyboardInterrupt` (as Python does), SIGTERM
raises `TrainingStopped`, a `SystemExit` with status 128 + 15 = 143 (the shell's convention
for "ended by SIGTERM"), so a scheduler sees that the run did not finish.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

import torch

from .. import distributed as dist


class TrainingStopped(SystemExit):
    """Raised after a SIGTERM once the checkpoint is written; the exit status is 128 + signal."""


class StopRequest:
    def __init__(self):
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


def _stop_now(signum: int):
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise TrainingStopped(128 + signum)


@contextlib.contextmanager
def stop_requests(signals=(signal.SIGINT, signal.SIGTERM)):
    """Yield a `StopRequest` that becomes true at the first signal; the second stops at once.
    (Signal handlers can only be set in the main thread; elsewhere nothing is caught.)"""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def note(signum, frame):
        if request:
            _stop_now(signum)
        request.signum = signum
        print(
            f"\n{signal.Signals(signum).name}: finishing this step, then writing the "
            "checkpoint (send it again to stop at once, without a checkpoint)",
            file=sys.stderr,
            flush=True,
        )

    previous = {s: signal.signal(s, note) for s in signals}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def agreed_stop(request: StopRequest, device: torch.device) -> int | None:
    """The signal to stop for, agreed by every process (the largest number any rank got), or
    None. One tiny all_reduce per step when distributed; free otherwise."""
    if not dist.is_distributed():
        return request.signum
    flag = torch.tensor([float(request.signum or 0)], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    signum = int(flag.item())
    return signum or None


def finish_stop(signum: int, message: str):
    """After the checkpoint: print `message` and stop with the signal's convention."""
    print(message, file=sys.stderr, flush=True)
    _stop_now(signum)
