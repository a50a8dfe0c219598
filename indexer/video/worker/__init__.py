"""The decode worker: a ``spawn`` child process that probes and decodes, and its client.

``client.py`` is the parent side: :class:`DecodeWorker` (starting, calling and
replacing the process; requests with deadlines, frames back through shared memory),
what a request returns (:class:`DecodedFrames`) and its helpers. ``channels.py`` is
how its requests share the process: a channel each, and a gate for a request that
must run alone. ``process.py`` is the child side:
:func:`~vidseek.indexer.video.worker.process._worker_main`, what runs in the decoder
process, serving the requests. See the :mod:`vidseek.indexer.video` package
docstring for why decoding runs apart.
"""

from vidseek.indexer.video.worker.client import DEFAULT_START_TIMEOUT as DEFAULT_START_TIMEOUT
from vidseek.indexer.video.worker.client import DecodedFrames as DecodedFrames
from vidseek.indexer.video.worker.client import DecodeWorker as DecodeWorker
from vidseek.indexer.video.worker.client import OnError as OnError
from vidseek.indexer.video.worker.client import _check_file as _check_file
from vidseek.indexer.video.worker.client import resolve_backend as resolve_backend
from vidseek.indexer.video.worker.process import PROCESS_NAME as PROCESS_NAME
