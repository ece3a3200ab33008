"""The recipe zoo: ready run configurations in ``configs/*.yaml``, each with the result it should reach.

A recipe is a config file (the sections of :class:`~simclr_core.config.TrainConfig`) with one more
block, ``recipe``: its ``title`` (the app's preset name), ``order`` in the app's list, the ``expected``
result and the ``source`` of that figure. ``simclr-train --config configs/<name>.yaml`` and the app's
Preset box both read these files, as solo-learn's and lightly's benchmark tables list theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from simclr_core.config import TrainConfig
from simclr_core.errors import UserError
from simclr_core.resources import configs_dir

__all__ = ["Recipe", "read_recipe", "recipe", "recipes"]


@dataclass(frozen=True)
class Recipe:
    """One file of the zoo; :meth:`config` gives a fresh :class:`TrainConfig` each call."""

    name: str  # the file's stem, e.g. "simclr-cifar10-resnet18"
    title: str
    order: int
    expected: str
    source: str
    path: Path

    def config(self) -> TrainConfig:
        return TrainConfig.load(self.path)


def read_recipe(path: str | Path) -> Recipe:
    """A recipe file's metadata (and, through :meth:`Recipe.config`, its settings); a UserError if damaged."""
    import yaml

    path = Path(path)
    try:
        meta = (yaml.safe_load(path.read_text()) or {}).get("recipe") or {}
    except (OSError, yaml.YAMLError, AttributeError) as e:
        raise UserError(f"cannot read recipe {path}: {str(e).splitlines()[0]}") from None
    missing = [k for k in ("title", "expected", "source") if not meta.get(k)]
    if missing:
        raise UserError(f"recipe {path} lacks {', '.join(missing)} in its 'recipe' block")
    return Recipe(
        path.stem, str(meta["title"]), int(meta.get("order", 99)), str(meta["expected"]), str(meta["source"]), path
    )


def recipes(folder: str | Path | None = None) -> list[Recipe]:
    """Every recipe of the zoo (``configs/``), in the app's order."""
    folder = Path(folder) if folder else configs_dir()
    return sorted((read_recipe(p) for p in folder.glob("*.yaml")), key=lambda r: (r.order, r.name))


def recipe(name: str) -> TrainConfig:
    """A fresh config of the recipe called ``name``: its file stem (``simclr-cifar10-resnet18``) or its title."""
    zoo = recipes()
    for r in zoo:
        if name in (r.name, r.title):
            return r.config()
    raise UserError(f"no recipe {name!r}; the zoo holds: {', '.join(r.name for r in zoo)}")
