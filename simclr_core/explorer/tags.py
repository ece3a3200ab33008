"""Tags: named sets of a split's images, kept in the run folder (``tags.json``), as FiftyOne's tags and saved views.

A user of the explorer selects images (a lasso, a neighbours list, the 100 highest of a score, a class)
and saves them under a name; the map can then be coloured or filtered by tag, and a tag exported as a
CSV of rows and file paths. A tag names rows of one split (image indices), so it holds for every
checkpoint and feature of the run.
"""

from __future__ import annotations

import csv
import io
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from simclr_core.errors import UserError
from simclr_core.explorer.tables import class_names
from simclr_core.runs.rundir import RunDir

__all__ = ["MAX_NAME", "Tag", "delete_tag", "load_tags", "save_tag", "to_csv"]

MAX_NAME = 60
_NAME = re.compile(r"^[\w][\w .,:+()#/-]*$")  # words, spaces and a little punctuation; no control characters


@dataclass
class Tag:
    """A named set of rows of one split."""

    name: str
    split: str
    rows: list[int]
    source: str = ""  # how it was selected, in words ("lasso", "neighbours of #12", "class cat")
    created: float = field(default_factory=time.time)


def check_name(name: str) -> str:
    """``name`` stripped, or a UserError saying what a tag name may hold."""
    name = name.strip()
    if not name:
        raise UserError("give the tag a name")
    if len(name) > MAX_NAME or not _NAME.match(name):
        raise UserError(
            f"tag name {name[:MAX_NAME]!r} is not allowed: use up to {MAX_NAME} letters, digits, spaces "
            "and . , : + ( ) # / - (starting with a letter or digit)"
        )
    return name


def _parse(record: Any) -> Tag | None:
    """A tag from its JSON record, or None when the record is damaged (it is then left out, not fatal)."""
    if not isinstance(record, dict):
        return None
    name, split, rows = record.get("name"), record.get("split"), record.get("rows")
    if not (isinstance(name, str) and isinstance(split, str) and isinstance(rows, list)):
        return None
    if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in rows):
        return None
    created = record.get("created")
    return Tag(
        name,
        split,
        rows,
        str(record.get("source", "")),
        float(created) if isinstance(created, (int, float)) else 0.0,
    )


def load_tags(run: RunDir, split: str | None = None) -> dict[str, Tag]:
    """The run's tags by name (of one ``split`` if given), oldest first; a damaged record is left out."""
    tags = [t for t in map(_parse, run.read_json_list(run.tags_path)) if t is not None]
    return {t.name: t for t in tags if split is None or t.split == split}


def save_tag(run: RunDir, name: str, split: str, rows: list[int] | np.ndarray, source: str = "") -> Tag:
    """Save (or replace) the tag ``name`` of ``split`` holding ``rows`` (each once, in split order)."""
    name = check_name(name)
    unique = sorted({int(r) for r in np.asarray(rows, np.int64).reshape(-1).tolist()})
    if not unique:
        raise UserError("the selection is empty: select some images first")
    if unique[0] < 0:
        raise UserError(f"row {unique[0]} is not an image of the {split} split")
    tag = Tag(name, split, unique, source)

    def update(records: list[Any]) -> list[Any]:
        return [r for r in records if not (isinstance(r, dict) and r.get("name") == name)] + [asdict(tag)]

    run.update_json_list(run.tags_path, update)
    return tag


def delete_tag(run: RunDir, name: str) -> None:
    """Remove the tag ``name`` (nothing happens when there is none)."""
    run.update_json_list(
        run.tags_path, lambda records: [r for r in records if not (isinstance(r, dict) and r.get("name") == name)]
    )


def to_csv(tag: Tag, labels: np.ndarray, classes: list[str], paths: list[str] | None = None) -> bytes:
    """The tag's images as CSV: index, label, class and (folder datasets) path; UTF-8 with a header.

    A row past the split's end (the split shrank since the tag was saved) is left out.
    """
    rows = [r for r in tag.rows if r < len(labels)]
    names = class_names(np.asarray(labels)[rows], classes)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["index", "label", "class", *(["path"] if paths is not None else [])])
    for r, name in zip(rows, names, strict=True):
        w.writerow([r, int(labels[r]), name, *([paths[r]] if paths is not None else [])])
    return buf.getvalue().encode("utf-8", "surrogateescape")  # a file name that is not UTF-8 keeps its bytes
