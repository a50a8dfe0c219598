"""How a worker's requests share its process: :class:`_Channel`, one request channel
(a frame buffer and a pipe end), and :class:`_Gate`, which lets requests run side by
side or one alone (a retry after a crash runs alone)."""

from __future__ import annotations

import contextlib
import mmap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection


class _Gate:
    """Requests run side by side (:meth:`shared`) or one alone (:meth:`alone`): a
    request waiting to run alone lets those running finish and holds back new ones."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._shared = 0  # requests running side by side
        self._alone = 0  # requests running or waiting to run alone
        self._one = threading.Lock()  # the request running alone

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        entered = False
        try:
            with self._changed:
                self._changed.wait_for(lambda: not self._alone)
                self._shared += 1
                entered = True
            yield
        finally:
            if entered:
                with self._changed:
                    self._shared -= 1
                    self._changed.notify_all()

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        entered = False
        try:
            with self._changed:
                self._alone += 1
                entered = True
                self._changed.wait_for(lambda: not self._shared)
            with self._one:
                yield
        finally:
            if entered:
                with self._changed:
                    self._alone -= 1
                    self._changed.notify_all()


@dataclass(eq=False)
class _Channel:
    """One of a worker's request channels: its frame buffer and its end of the pipe.

    ``generation`` is the worker process the pipe leads to; a channel whose
    process was replaced takes the new process's pipe on its next request.
    """

    number: int
    buffer_fd: int
    buffer: mmap.mmap | None = None
    capacity: int = 0
    conn: Connection | None = None
    generation: int = -1
