"""Fixtures shared by the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data.common import write_corrupt, write_image


@pytest.fixture
def classes_dir(tmp_path: Path) -> Path:
    """cats/ (2 images + a corrupt .jpg), dogs/ (2 images, one nested), plus files to ignore."""
    root = tmp_path / "pets"
    write_image(root / "cats" / "a.png", color=(10, 20, 30))
    write_image(root / "cats" / "b.PNG", color=(10, 20, 30))
    write_corrupt(root / "cats" / "broken.jpg")
    write_image(root / "dogs" / "x.jpg", color=(250, 250, 250))
    write_image(root / "dogs" / "deeper" / "y.bmp", color=(250, 250, 250))
    (root / "dogs" / "notes.txt").write_text("not an image")
    (root / "empty").mkdir()  # no images: not a class
    write_image(root / ".hidden" / "z.png")  # hidden folders are ignored
    return root
