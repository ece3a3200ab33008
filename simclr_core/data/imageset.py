"""ImageSet: one split of a dataset as a uint8 tensor, with its labels, class names, files and skips."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch


@dataclass
class ImageSet:
    """A labelled (or unlabelled) split held as one uint8 tensor.

    ``images`` may wrap a copy-on-write memory map of the cache file: reading is free and
    in-place writes stay private to the process, never reaching the file.
    """

    images: torch.Tensor  # (N, 3, H, W) uint8, CPU, contiguous
    labels: torch.Tensor  # (N,) int64; -1 where the image has no label
    classes: list[str]  # class names; [] when unlabelled
    name: str  # e.g. "cifar10/train", "folder:/abs/path/train"
    skipped: int = 0  # folder entries skipped while scanning or decoding: the sum of ``skips``
    paths: list[str] | None = None  # folders: each image's file, absolute, so a user can find it on disk
    skips: dict[str, int] = field(default_factory=dict)  # skipped entries by reason, e.g. {"broken_link": 2}
    notes: list[str] = field(default_factory=list)  # one-line messages for the user: what was skipped, no cache
    skip_examples: dict[str, str] = field(default_factory=dict)  # reason -> first such entry, relative to the split

    @property
    def labelled(self) -> bool:
        """True when every image has a label and the class names are known."""
        return bool(self.classes) and len(self.labels) > 0 and bool((self.labels >= 0).all())

    def take(self, indices: torch.Tensor) -> ImageSet:
        """The images at ``indices`` (sorted int64), with their labels and paths."""
        paths = [self.paths[i] for i in indices.tolist()] if self.paths is not None else None
        return replace(self, images=self.images[indices].contiguous(), labels=self.labels[indices], paths=paths)

    def subset(self, n: int | None, seed: int = 0) -> ImageSet:
        """A fixed random subset of ``n`` images (all of them when n is None or not smaller)."""
        if n is None or n >= len(self):
            return self
        return self.take(torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].sort().values)

    def __len__(self) -> int:
        return int(self.images.shape[0])
