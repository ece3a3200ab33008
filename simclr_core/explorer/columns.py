"""Binary columns for the browser's map: positions, colours, rows and tooltip fields as raw arrays.

The Embeddings page's WebGL map (ui/scatter.js) fetches each column by URL from the app's static folder
(``static/maps/``) and keeps it, so a million points cross to the browser once as 8 MB of float32
positions instead of ~190 MB of JSON, and a new colouring sends only its 4 MB colour column. A file's
name is a digest of its bytes, so the same column is written once and an URL always means the same data.

:class:`ColumnStore` owns the folder: atomic writes, and a size cap (``SIMCLR_MAPS_MAX_MB``, default
320 MB: with the thumbnails' 640 MB under the 1 GB of ``static/`` past which Streamlit serves none of it)
held by deleting the files used least recently; a file used in the last :data:`IN_USE_S` seconds may be
on someone's map and is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from pathlib import Path

import numpy as np

from simclr_core.errors import UserError

__all__ = ["DTYPES", "MAX_MB_ENV", "ColumnStore"]

MAX_MB_ENV = "SIMCLR_MAPS_MAX_MB"
DEFAULT_MAX_MB = 320
IN_USE_S = 600.0
# What the browser reads each kind of column as (ui/scatter.js): one typed array per file, little-endian.
DTYPES = {"f32": np.float32, "u8": np.uint8, "i16": np.int16, "i32": np.int32, "txt": None}
NAME = re.compile(r"^[0-9a-f]{20}\.(f32|u8|i16|i32|txt)$")  # what put() names; nothing else is ours


class ColumnStore:
    """Content-addressed column files under ``root`` (the app's ``static/maps``), held under a cap."""

    def __init__(self, root: str | Path, max_bytes: int | None = None, in_use_s: float = IN_USE_S):
        self.root = Path(root)
        self._max_bytes = max_bytes
        self.in_use_s = in_use_s

    @property
    def max_bytes(self) -> int:
        """The cap: as given, else ``SIMCLR_MAPS_MAX_MB`` megabytes, else 320 MB."""
        if self._max_bytes is not None:
            return self._max_bytes
        raw = os.environ.get(MAX_MB_ENV, str(DEFAULT_MAX_MB))
        try:
            mb = float(raw)
        except ValueError:
            mb = -1.0
        if not 16 <= mb <= 1e7:
            raise UserError(f"{MAX_MB_ENV}={raw!r} is not a size in MB between 16 and 10000000: unset it or fix it")
        return int(mb * 2**20)

    def put(self, values: np.ndarray | str, kind: str) -> str:
        """Write ``values`` as a column of ``kind`` (a key of :data:`DTYPES`) once; returns its file name.

        ``txt`` columns are one string (rows joined by newlines), UTF-8; the others are cast to their dtype.
        """
        if kind not in DTYPES:
            raise ValueError(f"unknown column kind {kind!r}")
        dtype = DTYPES[kind]
        if dtype is None:
            data = str(values).encode("utf-8", "replace")
        else:
            data = np.ascontiguousarray(np.asarray(values, dtype=np.dtype(dtype).newbyteorder("<"))).tobytes()
        name = f"{hashlib.blake2b(data, digest_size=10).hexdigest()}.{kind}"
        path = self.root / name
        if path.is_file():
            os.utime(path)
            return name
        tmp = self.root / f".{name}.{os.getpid()}.tmp"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as e:
            why = f"could not write the map's data to {self.root} ({e.strerror})"
            raise UserError(f"{why}: free some disk space, or check that folder can be written") from e
        finally:
            with contextlib.suppress(OSError):  # nothing to clean where nothing could be written
                tmp.unlink(missing_ok=True)
        self.evict(keep=[name])
        return name

    def files(self) -> list[Path]:
        """The store's column files, least recently used first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if NAME.match(p.name)]
        return sorted(found, key=lambda p: p.stat().st_mtime)

    def evict(self, keep: list[str] | tuple[str, ...] = ()) -> list[str]:
        """Delete the least recently used files until the folder fits the cap; returns their names.

        Files in ``keep`` and those used within ``in_use_s`` seconds are never deleted.
        """
        files = self.files()
        total = sum(p.stat().st_size for p in files)
        gone: list[str] = []
        now = time.time()
        for p in files:
            if total <= self.max_bytes:
                break
            if p.name in keep or now - p.stat().st_mtime < self.in_use_s:
                continue
            size = p.stat().st_size
            p.unlink(missing_ok=True)
            total -= size
            gone.append(p.name)
        return gone
