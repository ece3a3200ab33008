"""What a page asks the background worker for, typed: one frozen dataclass per kind of job.

A spec crosses to the worker as JSON (:meth:`JobSpec.to_dict`), and the same spec names the same job
(:func:`simclr_core.explorer.jobs.job_id`), so identical requests share one. The worker reads it back
with :meth:`JobSpec.from_dict` before computing (:mod:`simclr_core.explorer.compute`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Self

from simclr_core.errors import UserError

__all__ = ["EmbedSpec", "EstimateSpec", "EvaluateSpec", "ExportSpec", "JobSpec", "MapSpec", "TrajectorySpec"]


@dataclass(frozen=True)
class JobSpec:
    """A job's settings; ``kind`` names the job (:data:`simclr_core.explorer.compute.KINDS`)."""

    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-able values: what the job file holds."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """The spec of a job file; keys it does not know are ignored (an older app's), missing ones said."""
        if not isinstance(d, dict):
            raise UserError(f"the {cls.kind} job's spec is not a mapping: {d!r}")
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except TypeError as e:  # a required field is missing
            raise UserError(f"the {cls.kind} job's spec is incomplete ({e})") from None


@dataclass(frozen=True)
class MapSpec(JobSpec):
    """A split's map: embeddings, k-NN graph, projection and thumbnails."""

    kind: ClassVar[str] = "map"
    run: str  # the run folder
    split: str
    feature: str  # "h" (backbone) or "z" (projection)
    method: str  # the projection: umap, tsne or pca
    dims: int  # 2 or 3
    params: dict[str, Any] = field(default_factory=dict)  # the projection's own parameters
    max_points: int | None = None  # None: every image of the split
    thumbs: str | None = None  # the folder for hover thumbnails (None: none)
    ckpt: str | None = None  # the pinned checkpoint's key (None: the newest)
    # what the result holds: 2 adds the thumbnails' atlas and the first map; a result of an older version
    # (kept in the jobs folder) is another job's, so a page asking for 2 never reads one without them
    version: int = 2


@dataclass(frozen=True)
class EmbedSpec(JobSpec):
    """One split's embeddings (the Search page's bank)."""

    kind: ClassVar[str] = "embed"
    run: str
    split: str
    feature: str
    random_init: bool = False  # an untrained backbone of the same architecture
    ckpt: str | None = None  # as MapSpec's


@dataclass(frozen=True)
class TrajectorySpec(JobSpec):
    """The probe's frames, projected epoch by epoch (the space over training)."""

    kind: ClassVar[str] = "trajectory"
    run: str
    method: str
    dims: int
    params: dict[str, Any] = field(default_factory=dict)
    thumbs: str | None = None
    frames: list[int] | None = None  # the epochs on disk when asked: a new frame is a new job
    version: int = 2  # as MapSpec's: 2 has the thumbnails' atlas


@dataclass(frozen=True)
class ExportSpec(JobSpec):
    """The backbone in one of ``simclr-export``'s formats."""

    kind: ClassVar[str] = "export"
    run: str
    format: str
    ckpt: str | None = None  # the backbone file's key: a new checkpoint is a new job


@dataclass(frozen=True)
class EvaluateSpec(JobSpec):
    """kNN and the linear probe of several runs (:func:`simclr_core.evaluation.run.evaluate_job`)."""

    kind: ClassVar[str] = "evaluate"
    runs: list[dict[str, str]]  # [{"run": folder, "ckpt": checkpoint key}, ...]
    baseline: bool  # also each run's random-init backbone
    k: int
    probe_epochs: int
    max_bank: int | None = None


@dataclass(frozen=True)
class EstimateSpec(JobSpec):
    """A run's time, measured on this machine (:func:`simclr_core.training.estimate.estimate_job`)."""

    kind: ClassVar[str] = "estimate"
    config: dict[str, Any]  # TrainConfig.to_dict()
    device: str | None = None  # None: the config's
    requested: float | None = None  # when it was asked: a new value measures afresh
    seconds: float | None = None  # the measurement's budget (None: the default)
