"""Locks: a readers-writer lock within a process, and a data-directory lock across them."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vidseek.storage.errors import ConfigError

__all__ = ["DirectoryLock", "ReadWriteLock"]


class DirectoryLock:
    """An exclusive lock on a data directory, held by one process at a time.

    ``flock`` on ``<directory>/.vidseek.lock``: the kernel releases it when the
    holder exits, however it exits, so a crash never leaves a stale lock. The
    file records the holder's pid for the error message.
    """

    def __init__(self, directory: Path, purpose: str) -> None:
        self.path = Path(directory) / ".vidseek.lock"
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise ConfigError naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(
                f"{self.path.parent} is in use by {holder}; stop it before the {self.purpose}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"vidseek {self.purpose} (pid {os.getpid()})".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (closing the file releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class ReadWriteLock:
    """Many readers at once, or one writer alone.

    Writer-preferring: once a writer waits, new readers queue behind it, so a
    steady stream of searches cannot starve ingestion. Not re-entrant: a thread
    holding the read side must not ask for it again while a writer may be waiting.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        """Hold the shared (read) side for the duration of the block."""
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        """Hold the exclusive (write) side for the duration of the block."""
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
