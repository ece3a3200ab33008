"""Thumbnails as sprite atlases: a set per split, written once, lossless for small images; the folder under a cap."""

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from simclr_core.data.datasets import ImageSet
from simclr_core.errors import UserError
from simclr_core.explorer import thumbnails
from simclr_core.explorer.thumbnails import (
    IN_USE_S,
    MAX_MB_ENV,
    ThumbnailStore,
    atlas_layout,
    cap_bytes,
    digest,
    write_thumbnails,
)


def images(n: int, side: int, seed: int = 0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    return ImageSet(
        torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g),
        torch.zeros(n, dtype=torch.long),
        [],
        f"test/{side}",
    )


def tile(folder: Path, manifest: dict, row: int) -> np.ndarray:
    """Row ``row``'s pixels, cropped from its atlas as the map's JavaScript does (the manifest's contract)."""
    t, c = manifest["tile"], manifest["cols"]
    j = row % (c * c)
    pic = np.asarray(Image.open(folder / f"atlas-{row // (c * c)}.{manifest['ext']}"))
    assert pic.shape[1] == c * t  # every atlas is C*T wide
    x, y = (j % c) * t, (j // c) * t
    return pic[y : y + t, x : x + t]


def test_atlases_hold_every_image_exactly_where_the_manifest_says(tmp_path, monkeypatch):
    monkeypatch.setattr(thumbnails, "ATLAS_PX", 4 * 32)  # 4 x 4 tiles an atlas: 16 images, so 37 need 3
    imgs = images(37, 32)
    store = ThumbnailStore(tmp_path)
    out = store.write(imgs)
    m = store.manifest(out.name)
    assert m == {"tile": 32, "cols": 4, "count": 37, "files": 3, "ext": "png"}
    assert json.loads((out / "atlas.json").read_text()) == m
    assert sorted(p.name for p in out.iterdir()) == ["atlas-0.png", "atlas-1.png", "atlas-2.png", "atlas.json"]
    for row in range(37):  # pixel for pixel: lossless, and at the tile the manifest names
        assert np.array_equal(tile(out, m, row), imgs.images[row].numpy().transpose(1, 2, 0)), row
    # full atlases are C*T square; the last has only the tile rows it needs (5 images: 2 rows of 4)
    assert [Image.open(out / f"atlas-{i}.png").size for i in range(3)] == [(128, 128), (128, 128), (128, 64)]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_large_splits_get_jpeg_atlases_a_fraction_of_png(tmp_path, monkeypatch):
    """Past PNG_MAX_ROWS images the atlases are JPEG: a million CIFAR tiles as PNG (2 GB) would push static/ over
    the 1 GB at which Streamlit serves none of it. Smooth images (like photos) stay close to their pixels."""
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(40, 3, 4, 4, generator=g), size=32, mode="bilinear")
    imgs = ImageSet((smooth * 255).to(torch.uint8), torch.zeros(40, dtype=torch.long), [], "smooth")
    png = ThumbnailStore(tmp_path / "png").write(imgs)
    monkeypatch.setattr(thumbnails, "PNG_MAX_ROWS", 39)
    store = ThumbnailStore(tmp_path / "jpg")
    out = store.write(imgs)
    m = store.manifest(out.name)
    assert m is not None and m["ext"] == "jpg" and (out / "atlas-0.jpg").is_file()
    assert (out / "atlas-0.jpg").stat().st_size < (png / "atlas-0.png").stat().st_size / 2
    for row in (0, 17, 39):  # at the tile the manifest names, within JPEG's error
        err = np.abs(tile(out, m, row).astype(int) - imgs.images[row].numpy().transpose(1, 2, 0))
        assert err.mean() < 4, row


@pytest.mark.parametrize("n", [1, 2, 3])
def test_tiny_splits_get_one_short_atlas(tmp_path, n):
    imgs = images(n, 32, seed=n)
    store = ThumbnailStore(tmp_path)
    m = store.manifest(store.write(imgs).name)
    assert m == {"tile": 32, "cols": thumbnails.ATLAS_PX // 32, "count": n, "files": 1, "ext": "png"}
    out = tmp_path / digest(imgs)
    assert Image.open(out / "atlas-0.png").size == (thumbnails.ATLAS_PX, 32)  # one tile row
    for row in range(n):
        assert np.array_equal(tile(out, m, row), imgs.images[row].numpy().transpose(1, 2, 0))


def test_layout_counts_atlases_and_caps_the_tile():
    assert atlas_layout(0, 32) == {"tile": 32, "cols": 32, "count": 0, "files": 0}
    assert atlas_layout(1024, 32)["files"] == 1 and atlas_layout(1025, 32)["files"] == 2
    assert atlas_layout(1_000_000, 32)["files"] == 977  # 1M images: a thousand files, not a million
    assert atlas_layout(10, 8) == {"tile": 8, "cols": 128, "count": 10, "files": 1}  # digits stay native
    assert atlas_layout(10, 96) == {"tile": 64, "cols": 16, "count": 10, "files": 1}  # photos shrink to 64


def test_progress_counts_images_atlas_by_atlas(tmp_path, monkeypatch):
    monkeypatch.setattr(thumbnails, "ATLAS_PX", 2 * 32)  # 4 images an atlas
    calls = []
    write_thumbnails(images(10, 32), tmp_path, lambda done, total: calls.append((done, total)))
    assert calls == [(4, 10), (8, 10), (10, 10)]


def test_large_images_shrink_to_jpeg_tiles_and_a_set_is_written_once(tmp_path):
    ramp = torch.linspace(0, 200, 96).expand(96, 96)  # smooth pictures, as photos are: JPEG keeps them close
    x = torch.stack([torch.stack([ramp + 20 * k, ramp.T, torch.full((96, 96), 80.0 * k)]) for k in range(3)])
    imgs = ImageSet(x.to(torch.uint8), torch.zeros(3, dtype=torch.long), [], "photos")
    store = ThumbnailStore(tmp_path)
    out = store.write(imgs)
    m = store.manifest(out.name)
    assert m == {"tile": 64, "cols": thumbnails.ATLAS_PX // 64, "count": 3, "files": 1, "ext": "jpg"}
    assert Image.open(out / "atlas-0.jpg").size == (thumbnails.ATLAS_PX, 64)
    want = torch.nn.functional.interpolate(x, size=(64, 64), mode="area").numpy()
    for row in range(3):  # each tile is its image, downscaled (JPEG moves pixels a little)
        got = tile(out, m, row).astype(np.float32).transpose(2, 0, 1)
        assert np.abs(got - want[row]).mean() < 3
    stamp = (out / "atlas-0.jpg").stat().st_mtime_ns
    assert write_thumbnails(imgs, tmp_path) == out and (out / "atlas-0.jpg").stat().st_mtime_ns == stamp


def test_one_channel_images_and_manifests_that_are_not_sets(tmp_path):
    gray = ImageSet(torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8), torch.zeros(5, dtype=torch.long), [], "g")
    store = ThumbnailStore(tmp_path)
    out = store.write(gray)
    m = store.manifest(out.name)
    assert m is not None and m["tile"] == 8 and np.array_equal(tile(out, m, 4), gray.images[4, 0].numpy())
    (out / "atlas.json").write_text("{not json")
    assert store.manifest(out.name) is None and store.manifest("../x") is None and store.manifest("0" * 16) is None
    # a set that lost its manifest is written again, not served half-described
    again = store.write(gray)
    assert again == out and store.manifest(out.name) == m


def test_other_pixels_get_another_folder():
    assert digest(images(12, 32, seed=0)) != digest(images(12, 32, seed=1))
    assert digest(images(12, 32)) == digest(images(12, 32))


def set_used(store: ThumbnailStore, name: str, ago_s: float) -> None:
    t = time.time() - ago_s
    os.utime(store.root / name, (t, t))


def test_the_cap_evicts_the_least_recently_used_sets_and_keeps_the_one_written(tmp_path):
    a, b, c = (images(12, 32, seed=s) for s in (1, 2, 3))
    free = ThumbnailStore(tmp_path, max_bytes=10**12, in_use_s=0)
    for imgs in (a, b):
        free.write(imgs)
    set_used(free, digest(a), 300)
    set_used(free, digest(b), 600)
    assert free.touch(digest(a))  # a used again now: b is the least recently used
    per_set = max(s.bytes for s in free.sets())
    capped = ThumbnailStore(tmp_path, max_bytes=2 * per_set, in_use_s=0)
    capped.write(c)
    assert [s.name for s in capped.sets()] == [digest(a), digest(c)]  # least recently used first
    assert not (tmp_path / digest(b)).exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # the set being written stays even when it alone is over the cap
    tiny = ThumbnailStore(tmp_path, max_bytes=0, in_use_s=0)
    tiny.write(b)
    assert [s.name for s in tiny.sets()] == [digest(b)] and tiny.size() > 0


def test_sets_in_use_and_folders_not_ours_are_never_evicted(tmp_path):
    a, b = images(12, 32, seed=1), images(12, 32, seed=2)
    ThumbnailStore(tmp_path, max_bytes=10**12).write(a)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a thumbnail set")
    store = ThumbnailStore(tmp_path, max_bytes=0)  # the default: sets used in the last 10 minutes are in use
    store.write(b)
    assert {s.name for s in store.sets()} == {digest(a), digest(b)} and (tmp_path / "mine" / "notes.txt").is_file()
    set_used(store, digest(a), IN_USE_S + 60)
    assert store.evict(keep=[digest(b)]) == [digest(a)] and (tmp_path / "mine").is_dir()


def test_size_counts_whole_blocks_of_every_file_as_du_does(tmp_path):
    store = ThumbnailStore(tmp_path)
    assert store.size() == 0 and store.sets() == []
    store.write(images(12, 32, seed=1))
    store.write(images(5, 96, seed=2))  # JPEG
    # every file and folder below the root, in whole blocks (du -s --block-size=1, less the root's own)
    on_disk = sum(os.stat(Path(d) / f).st_blocks * 512 for d, dirs, files in os.walk(tmp_path) for f in files + dirs)
    assert store.size() == on_disk
    sets = store.sets()
    assert sorted(s.files for s in sets) == [2, 2] and sum(s.bytes for s in sets) == store.size()  # atlas + json
    assert all(s.bytes >= s.files * 512 for s in sets)  # a file takes at least a block, however small


def test_temp_folders_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for pid in (dead.pid, alive.pid):
            tmp = tmp_path / f".0123456789abcdef.{pid}.tmp"
            tmp.mkdir()
            (tmp / "0.png").write_bytes(b"x" * 5000)
        (tmp_path / f".fedcba9876543210.evicted.{dead.pid}.tmp").mkdir()  # a kill in the middle of an eviction
        store = ThumbnailStore(tmp_path)
        assert store.size() > 5000  # what is being written counts too
        store.write(images(3, 32))
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted([f".0123456789abcdef.{alive.pid}.tmp", digest(images(3, 32))])
        assert store.remove_stale_temps() == 0  # the live writer's folder stays
    finally:
        alive.kill()
        alive.wait()
    assert store.remove_stale_temps() == 1 and [p.name for p in tmp_path.iterdir()] == [digest(images(3, 32))]


def test_the_cap_is_read_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(MAX_MB_ENV, raising=False)
    assert cap_bytes() == 640 * 2**20
    monkeypatch.setenv(MAX_MB_ENV, "250")
    assert cap_bytes() == 250 * 2**20 and ThumbnailStore("x").max_bytes == 250 * 2**20
    monkeypatch.setenv(MAX_MB_ENV, "lots")
    store = ThumbnailStore(tmp_path)
    assert store.size() == 0 and not store.touch("0123456789abcdef")  # a page that only reads is not stopped
    with pytest.raises(UserError, match=f"{MAX_MB_ENV}='lots' is not a size: set it to the megabytes"):
        store.write(images(3, 32))
    assert list(tmp_path.iterdir()) == []  # said before anything was written


def test_touch_names_only_sets(tmp_path):
    store = ThumbnailStore(tmp_path)
    out = store.write(images(3, 32))
    set_used(store, out.name, 1000)
    assert store.touch(out.name) and time.time() - out.stat().st_mtime < 60
    assert not store.touch("0123456789abcdef") and not store.touch("../" + out.name) and not store.touch("")


def test_a_full_disk_says_what_to_do_and_leaves_no_half_set(tmp_path, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ThumbnailStore, "_write_files", staticmethod(full))
    with pytest.raises(UserError, match=f"is full: free some space, or lower {MAX_MB_ENV}"):
        ThumbnailStore(tmp_path).write(images(3, 32))
    assert list(tmp_path.iterdir()) == []
