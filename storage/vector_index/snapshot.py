"""Snapshots of a vector index: one file, written atomically, checked on load.

Layout: magic ``VSKFAISS3``, a 4-byte header length, a JSON header (parameters,
``applied_seq``, the video ids of the event table, sizes and a CRC-32 of the
rest), the FAISS blob, then the event table's columns. The file is written to a
temporary name, fsynced, renamed over the old one, and the directory fsynced,
so a reader sees the old snapshot or the new one. A loaded snapshot plus the
change log after its ``applied_seq`` is always the full state; a torn or
corrupt file is detected and never half-trusted. Files of the older formats
(``VSKFAISS1``/``2``, ids without the event table) are refused, and the store
rebuilds them from SQL.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from vidseek.storage.vector_index.index import VectorIndex, faiss_ids
from vidseek.storage.vector_index.params import AutoParams, HnswParams, IvfParams
from vidseek.storage.vector_index.table import EventTable

__all__ = ["SnapshotError", "read_snapshot", "write_snapshot"]

_MAGIC = b"VSKFAISS3"
_OLD_MAGICS = (b"VSKFAISS1", b"VSKFAISS2")
_faiss: Any = faiss


class SnapshotError(Exception):
    """A snapshot on disk is missing, truncated, corrupt, old or of another shape."""


def write_snapshot(index: VectorIndex, path: Path) -> None:
    """Write ``index`` to ``path`` atomically.

    Serialises under the read lock (searches continue; writers wait for the
    in-memory copy only), then writes the file without holding it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with index._lock.read():
        blob: Any = faiss.serialize_index(index._index)
        table = index._table.to_bytes()
        version = index.version
        meta = {
            "applied_seq": index.applied_seq,
            "dim": index.dim,
            "kind": index.kind,
            "hnsw": asdict(index.hnsw),
            "ivf": asdict(index.ivf),
            "auto": asdict(index.auto),
            "trained": index._trained,
            "trained_size": index.trained_size,
            "ntotal": int(index._index.ntotal),
            "live": index.ntotal,
            "slots": index._table.size,
            "videos": index._table.names,
        }
    view = memoryview(blob)
    crc = zlib.crc32(table, zlib.crc32(view))
    header = json.dumps(
        {**meta, "nbytes": len(view), "table_nbytes": len(table), "crc32": crc}
    ).encode()
    _atomic_write(path, [_MAGIC, struct.pack("<I", len(header)), header, view, table])
    index.saved_version = version


def read_snapshot(
    out: VectorIndex,
    path: Path,
    *,
    requested_ivf: IvfParams | None,
    requested_hnsw: HnswParams | None,
) -> VectorIndex:
    """Fill the fresh index ``out`` from the snapshot at ``path``; returns it.

    The file is read twice, streaming: once to verify length and checksum, then
    into FAISS. Garbage never reaches the deserialiser (a corrupt size field
    could make it allocate without bound), and memory peaks at one index.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; `with` would hide the error)
    except FileNotFoundError as exc:
        raise SnapshotError(f"no snapshot at {path}") from exc
    with f:
        magic = f.read(len(_MAGIC))
        if magic in _OLD_MAGICS:
            raise SnapshotError(f"snapshot {path} is of an older format (no event table)")
        try:
            if magic != _MAGIC:
                raise ValueError("bad magic")
            (hlen,) = struct.unpack("<I", f.read(4))
            meta = json.loads(f.read(hlen))
            start = f.tell()
            size = os.fstat(f.fileno()).st_size - start
            expected = int(meta["nbytes"]) + int(meta["table_nbytes"])
            if size != expected:
                raise ValueError(f"truncated: {size} of {expected} bytes")
            crc = 0
            while chunk := f.read(1 << 24):
                crc = zlib.crc32(chunk, crc)
            if crc != int(meta["crc32"]):
                raise ValueError("checksum mismatch")
            _check_shape(meta, out, path, requested_ivf, requested_hnsw)
            f.seek(start)
            remaining = [int(meta["nbytes"])]

            def read(n: int) -> bytes:
                n = min(n, remaining[0])
                remaining[0] -= n
                return f.read(n)

            index: Any = faiss.read_index(_faiss.PyCallbackIOReader(read))
            trained = bool(meta["trained"])
            if isinstance(index, faiss.IndexIVF) != trained:
                raise ValueError("index type and header disagree")
            f.seek(start + int(meta["nbytes"]))
            table = EventTable.from_bytes(f.read(), int(meta["slots"]), list(meta["videos"]))
        except SnapshotError:
            raise
        except Exception as exc:  # FAISS raises RuntimeError; struct/json raise others
            raise SnapshotError(f"unreadable snapshot {path}: {exc}") from exc
    slots = faiss_ids(index)
    live = slots[slots >= 0]
    if (
        index.d != out.dim
        or int(index.ntotal) != int(meta["ntotal"])
        or len(live) != table.live
        or len(live) != int(meta["live"])
        or not np.array_equal(np.sort(live), np.sort(table.lookup(table.ids())))
    ):
        raise SnapshotError(f"snapshot {path}: the index and its event table disagree")
    if out.kind != "hnsw" and len(live) != len(slots):
        raise SnapshotError(f"snapshot {path}: {out.kind} index with tombstones")
    if requested_hnsw is None:
        out.hnsw = HnswParams(**meta["hnsw"])
    if out.kind == "hnsw":
        graph = _faiss.downcast_index(index.index).hnsw
        graph.efSearch = out.hnsw.ef_search
        graph.efConstruction = out.hnsw.ef_construction
    if trained:
        saved = IvfParams(**meta["ivf"])
        # A trained auto index keeps the cells and probes it chose; an ivf index
        # takes the requested nprobe (a search setting).
        out.ivf = saved if out.kind == "auto" or requested_ivf is None else requested_ivf
        index.nprobe = min(out.ivf.nprobe, out.ivf.nlist)
    elif requested_ivf is None:
        out.ivf = IvfParams(**meta["ivf"])
    out._index = index
    out._table = table
    out._trained = trained
    out.trained_size = int(meta["trained_size"])
    out._dead = len(slots) - len(live)
    out.applied_seq = int(meta["applied_seq"])
    out.saved_version = out.version
    out.rebuild_totals()
    if out.auto_train and out._can_train():  # saved untrained with a larger threshold
        out.train()
    return out


def _check_shape(
    meta: dict[str, Any],
    out: VectorIndex,
    path: Path,
    ivf: IvfParams | None,
    hnsw: HnswParams | None,
) -> None:
    if int(meta["dim"]) != out.dim:
        raise SnapshotError(f"snapshot {path} has dimension {meta['dim']}, not {out.dim}")
    if meta["kind"] != out.kind:
        raise SnapshotError(f"snapshot {path} is a {meta['kind']!r} index, wanted {out.kind!r}")
    if out.kind == "hnsw" and hnsw is not None and int(meta["hnsw"]["m"]) != hnsw.m:
        raise SnapshotError(f"snapshot {path} has HNSW M={meta['hnsw']['m']}, wanted {hnsw.m}")
    saved = meta["ivf"]
    wanted = None if ivf is None else (ivf.nlist, ivf.encoding)
    cells = (saved["nlist"], saved["encoding"])
    if out.kind == "ivf" and meta["trained"] and wanted not in (None, cells):
        raise SnapshotError(
            f"snapshot {path} has IVF nlist={saved['nlist']} encoding={saved['encoding']}, "
            f"wanted {wanted}"
        )
    if out.kind == "auto" and AutoParams(**meta["auto"]) != out.auto:
        raise SnapshotError(f"snapshot {path} was built with other auto index parameters")


def _atomic_write(path: Path, chunks: Sequence[bytes | memoryview]) -> None:
    """Write ``chunks`` to ``path`` so that readers see the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
