"""The app shell's care of static/: Streamlit serves none of it when it holds over 1 GB at start-up."""

import os

import numpy as np
import torch
from streamlit.web.bootstrap import MAX_APP_STATIC_FOLDER_SIZE

from simclr_core.data.datasets import ImageSet
from simclr_core.explorer.columns import ColumnStore
from simclr_core.explorer.thumbnails import ThumbnailStore
from ui.shell import STATIC_LIMIT, trim_static


def test_an_oversized_static_folder_is_trimmed_to_the_stores_caps(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMCLR_THUMBS_MAX_MB", "0")
    monkeypatch.setenv("SIMCLR_MAPS_MAX_MB", "16")
    static = tmp_path / "static"
    maps, thumbs = static / "maps", static / "thumbs"
    columns = ColumnStore(maps, max_bytes=2**40)
    old = columns.put(np.full(9 * 2**18, 1, np.float32), "f32")  # 9 MB each: 18 MB over the 16 MB cap
    new = columns.put(np.full(9 * 2**18, 2, np.float32), "f32")
    os.utime(maps / old, (1, 1))  # used long ago
    pics = ImageSet(torch.zeros(3, 3, 32, 32, dtype=torch.uint8), torch.zeros(3, dtype=torch.long), [], "three")
    ThumbnailStore(thumbs, max_bytes=2**40).write(pics)  # a set in use this minute
    assert STATIC_LIMIT == MAX_APP_STATIC_FOLDER_SIZE
    assert trim_static(static, maps, thumbs) is None  # under the limit: left alone
    before, after = trim_static(static, maps, thumbs, limit=1000)
    assert not (maps / old).exists() and (maps / new).is_file()  # the maps' cap: the newest column stays
    assert not [p for p in thumbs.iterdir() if not p.name.startswith(".")]  # cap 0: even the set in use goes
    assert before > 18 * 2**20 and after == (maps / new).stat().st_size
