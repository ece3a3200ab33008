"""Training, in the order a newcomer reads it.

- :mod:`.loop`: :func:`fit`, the loop, and the bookkeeping at log steps and epoch ends;
- :mod:`.session`: :class:`Session`, everything the loop touches, and :func:`prepare`, which builds it;
- :mod:`.batches`: each epoch's seeded order and each rank's slice of it;
- :mod:`.state`: ``last.pt``: save, restore (exact resume), the finite-weight check;
- :mod:`.runner`: :func:`train`, a run's lifecycle: the folder's writer lock, status, log, signals.

The command line is :mod:`simclr_core.cli.train` (``python -m simclr_core.train``).
"""

from simclr_core.training.loop import fit
from simclr_core.training.runner import train
from simclr_core.training.session import Session, prepare

__all__ = ["Session", "fit", "prepare", "train"]
