"""SIGINT / SIGTERM during training: the first one asks the loop to stop after the current iteration
(so it can write last.pt at a whole step); a second one of either stops at once, without saving."""

from __future__ import annotations

import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopNow(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error of the program
    """A second stop signal: raised from the handler wherever the main thread is; nothing is saved."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Context manager that turns the stop signals into a request (`signum`) while training runs.

    Installed only in the main thread (Python delivers signals there) and only when `enabled`; the
    previous handlers come back on exit.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handle(self, signum: int, _frame) -> None:
        if self.signum is not None:
            raise StopNow(signum)
        self.signum = signum
        print(
            f"occreid: {signal.Signals(signum).name} received: finishing this iteration, then writing last.pt "
            "and stopping (send it again to stop at once, without saving)",
            file=sys.stderr, flush=True,
        )

    def __enter__(self) -> StopSignals:
        if self.enabled:
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *_exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
