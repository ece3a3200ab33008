"""Scanning a folder of images: its splits, class sub-folders and files, and what was skipped.

A folder is read defensively, since it is the user's: broken links, symlink loops, unreadable
sub-folders and special files are skipped and counted (:class:`Skipped`), never fatal, and so are
the images the decoder cannot read (:mod:`~simclr_core.data.decode`). File names that are not
UTF-8 are kept as Python's surrogate escapes, so they open; :func:`printable` makes them text.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections import Counter
from pathlib import Path

from simclr_core.errors import UserError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SKIP_LABELS = {  # reason -> (one, many), in the order a summary lists them
    "broken_link": ("broken link", "broken links"),
    "symlink_loop": ("symlink loop", "symlink loops"),
    "unreadable_folder": ("unreadable folder", "unreadable folders"),
    "unreadable_file": ("unreadable file", "unreadable files"),
    "special_file": ("special file (not a regular file)", "special files (not regular files)"),
    "unreadable_image": ("unreadable image", "unreadable images"),
    "too_large": (
        "image over {mp} megapixels (downscale it to use it)",
        "images over {mp} megapixels (downscale them to use them)",
    ),
}


def folder_root(path: str | None) -> Path:
    """The folder a user named, validated."""
    if path is None:
        raise UserError("--dataset folder needs --data-path DIR (a folder of images or of class sub-folders)")
    root = Path(path).expanduser()
    if not root.exists():
        raise UserError(f"--data-path {path} does not exist; point it at a folder of images")
    if not root.is_dir():
        raise UserError(f"--data-path {path} is a file, not a folder; extract archives first and point at the folder")
    return root.resolve()


def split_dir(root: Path, split: str) -> Path:
    """The folder holding ``split`` of the image folder ``root`` ("all": the folder itself)."""
    return root if split == "all" else root / split


def has_class_dirs(folder: Path) -> bool:
    """True when ``folder`` has a sub-folder (or a link to one): its images are then labelled by class."""
    return any(_is_dir(e) for e in _entries(folder))


def _entries(folder: Path) -> list[os.DirEntry]:
    """The non-hidden entries of a split folder, by name; a folder the user cannot read is a UserError."""
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as err:
        raise UserError(
            f"cannot read the image folder {folder} ({err.strerror or err}); "
            "fix its permissions or point --data-path at another folder"
        ) from err


def _is_dir(entry: os.DirEntry) -> bool:
    """True for a folder or a link to one; False for a broken link or a symlink loop (which raise)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


class Skipped:
    """Entries skipped while scanning or decoding a folder: a count and a first example per reason."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def add(self, reason: str, rel: str) -> None:
        self.counts[reason] += 1
        self.examples.setdefault(reason, rel)


def _skip_reason(entry: os.DirEntry, err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "symlink_loop"
    with contextlib.suppress(OSError):
        if entry.is_symlink() and err.errno in (errno.ENOENT, errno.ENOTDIR):
            return "broken_link"
    return "unreadable_file"


def skip_parts(counts: dict[str, int], examples: dict[str, str], max_pixels: int) -> str:
    """E.g. "2 broken links, e.g. cats/a.jpg; 1 unreadable folder, e.g. dogs/private".

    ``max_pixels`` is the decoder's bound, named by the "too_large" reason.
    """
    parts = []
    for reason, (one, many) in SKIP_LABELS.items():
        n = counts.get(reason, 0)
        if n:
            label = (one if n == 1 else many).format(mp=max_pixels // 10**6)
            parts.append(f"{n} {label}" + (f", e.g. {printable(examples[reason])}" if reason in examples else ""))
    return "; ".join(parts)


def printable(name: str) -> str:
    """``name`` with the bytes of a file name that is not UTF-8 (Python's surrogate escapes) written ``\\xff``:
    such names open as they are, but cannot be printed, logged or shown until they are made text."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def skip_summary(folder: Path, counts: dict[str, int], examples: dict[str, str], max_pixels: int) -> str:
    """One line: "skipped 3 unreadable entries in DIR (2 broken links, e.g. ...; 1 unreadable folder, ...)"."""
    n = sum(counts.values())
    where = printable(str(folder))
    parts = skip_parts(counts, examples, max_pixels)
    return f"skipped {n} unreadable {'entry' if n == 1 else 'entries'} in {where} ({parts})"


def _walk(folder: str, prefix: str, skipped: Skipped) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime) of image files anywhere below ``folder``; hidden entries skipped.

    Links to folders are not followed, so a loop cannot recurse. A broken or looping link, a
    folder that cannot be read and a non-regular file with an image name (a FIFO would block the
    decoder) are counted in ``skipped``, never fatal.

    Plain scandir with string paths: pathlib and os.path.relpath cost seconds on 60k files,
    and this scan runs on every load, cached or not.
    """
    found = []
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                if e.name.startswith("."):
                    continue
                rel = prefix + e.name
                try:
                    if e.is_dir(follow_symlinks=False):
                        found += _walk(e.path, rel + "/", skipped)
                    elif _is_image(e.name):
                        st = e.stat()  # follows links: raises for a broken one or a loop
                        if stat.S_ISREG(st.st_mode):
                            found.append((rel, st.st_size, st.st_mtime_ns))
                        else:
                            skipped.add("special_file", rel)
                except OSError as err:
                    skipped.add(_skip_reason(e, err), rel)
    except OSError:  # unreadable (chmod 000), or gone meanwhile
        skipped.add("unreadable_folder", prefix.rstrip("/"))
    return found


def scan(folder: Path) -> tuple[list[tuple[str, int, int]], list[int], list[str], Skipped]:
    """(files as (relative path, size, mtime), labels, classes, what was skipped) of one split.

    Each sub-folder holding images is a class (a link to a folder counts); images directly in
    ``folder`` get label -1. A broken or looping link at this level counts as skipped whatever its
    name, as it may stand for a class folder.
    """
    skipped = Skipped()
    files: list[tuple[str, int, int]] = []
    class_dirs = []
    for e in _entries(folder):
        try:
            if e.is_dir():  # follows links; raises for a loop
                class_dirs.append(e)
            elif _is_image(e.name) or e.is_symlink():
                st = e.stat()  # raises for a broken link
                if not _is_image(e.name):
                    continue
                if stat.S_ISREG(st.st_mode):
                    files.append((e.name, st.st_size, st.st_mtime_ns))
                else:
                    skipped.add("special_file", e.name)
        except OSError as err:
            skipped.add(_skip_reason(e, err), e.name)
    labels = [-1] * len(files)
    classes: list[str] = []
    for entry in class_dirs:
        inside = sorted(_walk(entry.path, entry.name + "/", skipped))
        if inside:  # a folder without images is no class
            files += inside
            labels += [len(classes)] * len(inside)
            classes.append(entry.name)
    return files, labels, classes, skipped
