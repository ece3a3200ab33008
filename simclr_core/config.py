"""Typed, commented configuration: one dataclass per concern, filled by the CLI, a file or the app.

Every field carries its help text in ``metadata["help"]``: the CLI builds ``--flag`` options from
it, and the app shows it beside the field's widget, whose label, range and step sit in the same
metadata (:func:`widget_spec`). A whole run is a :class:`TrainConfig`; it is saved as
``config.json`` in the run folder and can be read back from JSON or YAML.

Longer than our other modules on purpose: it is the one table of every setting (default, range, help),
which reads best whole. What "auto" (None) becomes is decided in one step, :func:`simclr_core.resolve.resolve`,
from the rules here (views, optimiser) and from each method class.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from simclr_core.errors import UserError
from simclr_core.evaluation.label_free import SIGNALS as LABEL_FREE_SIGNALS

T = TypeVar("T")


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field whose help text the CLI and the app reuse.

    ``kw`` adds rules that :meth:`TrainConfig.validate` checks for every source of settings (flags,
    files, the app, the Python API): ``choices``, and the bounds ``min`` / ``max`` (inclusive) and
    ``gt`` / ``lt`` (exclusive). It also says how the app shows the field (:func:`widget_spec`):
    ``label``, ``step``, ``format`` (printf-style, for number inputs), and ``ui_min`` / ``ui_max``,
    a slider's ends where they differ from ``min`` / ``max`` (an open range, or one too wide to slide).
    ``option`` names the command-line option when it is not the field's name (``method.name`` is
    ``--method``, as ``run.name`` is ``--name``). ``auto=True`` lets a field whose default is a number
    also take the word "auto" (stored as None, as every "auto" value is; ``--batch-size auto``).
    """
    return field(default=default, metadata={"help": help, **kw})


def resolved(value: T | None, name: str) -> T:
    """A setting that :func:`simclr_core.resolve.resolve` has filled; a bug (not a user's mistake) if not."""
    if value is None:
        raise ValueError(f"{name} is unset: simclr_core.resolve.resolve fills it first")
    return value


def flag(name: str) -> str:
    """The command-line flag of an option name: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def option(f: dataclasses.Field[Any]) -> str:
    """The command-line option of a config field, as ``argparse`` stores it: usually the field's name."""
    return str(f.metadata.get("option", f.name))


def options() -> dict[str, tuple[str, str]]:
    """Every command-line option -> (section, field) of :class:`TrainConfig`."""
    return {option(f): (section, f.name) for section, cls in sections().items() for f in fields(cls)}


_KINDS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}

# "auto" (None) values: the rules :func:`simclr_core.resolve.resolve` applies, and the help texts quote.
METHOD_NAMES = ("simclr", "moco_v2", "byol")  # simclr_core.methods.METHODS has a class for each, checked there
HEAD_NAMES = ("simclr", "moco_v2", "byol")  # simclr_core.heads.SPECS has a head for each, checked there
SMALL_IMAGE = 64  # px: images this small or smaller get the paper's CIFAR views (Chen et al. 2020, B.9)
AUTO_VIEWS = {"jitter_strength": (0.5, 1.0), "blur_prob": (0.0, 0.5)}  # (small images, larger ones)
LR_PER_256 = {"lars": 0.3, "sgd": 0.06}  # linear scaling: peak lr = this x batch / 256
WEIGHT_DECAY = {"lars": 1e-6, "sgd": 5e-4}
WARMUP_EPOCHS, WARMUP_SHARE = 10.0, 0.1  # at most 10 epochs, and at most a tenth of the run
AUTO_BATCH_FREE = 0.15  # --batch-size auto on a GPU: the share of its memory a step leaves for the kNN monitor
AUTO_BATCH_CPU = 256  # --batch-size auto off CUDA: what a GPU run's default is; a CPU cannot be probed by running out
# --keep-best: a label-free signal of the probe (simclr_core.evaluation.label_free, which must import nothing
# of simclr_core at module level: this module imports it), or the kNN monitor's
# top-1 for labelled data; each epoch's metrics line holds them under these keys
KEEP_BEST_SIGNALS = (*LABEL_FREE_SIGNALS, "knn_top1")


@dataclass(frozen=True)
class WidgetSpec:
    """How the app shows one config field: what :func:`widget_spec` reads from the field's metadata."""

    label: str
    option: str  # the command-line option (``lr`` for ``--lr``), as precheck messages name it
    help: str
    default: Any  # the dataclass default (None: resolved later, "auto" in the app)
    optional: bool  # None is a valid value
    choices: tuple[Any, ...] | None
    min: float | None  # a slider's ends (None where the field sets none)
    max: float | None
    step: float | None
    format: str | None  # printf-style, for a number input


def widget_spec(section: str, name: str) -> WidgetSpec:
    """The label, help, default, choices, slider range and step of field ``name`` of config section ``section``.

    Both of the app's pages build their widgets from this, so a setting looks and steps the same on
    each. Bounds and step take the field's own type: Streamlit refuses a float slider with int ends.
    """
    f = next((f for f in fields(sections()[section]) if f.name == name), None)
    if f is None:
        raise KeyError(f"config section {section!r} has no field {name!r}")
    m, kinds = f.metadata, str(f.type).split(" | ")
    number = float if "float" in kinds else int

    def num(*keys: str) -> float | None:
        v = next((m[k] for k in keys if k in m), None)
        return None if v is None else number(v)

    return WidgetSpec(
        label=m.get("label", name.replace("_", " ").capitalize()),
        option=option(f),
        help=m["help"],
        default=f.default,
        optional="None" in kinds,
        choices=m.get("choices"),
        min=num("ui_min", "min"),
        max=num("ui_max", "max"),
        step=num("step"),
        format=m.get("format"),
    )


def check_field(section: str, f: dataclasses.Field, value: Any) -> None:
    """Raise a UserError naming the flag (and the file key) if ``value`` breaks the field's type or rules."""
    where, key = flag(option(f)), f" (config key {section}.{f.name})"
    kinds = str(f.type).split(" | ")
    if value is None:
        if "None" in kinds:
            return
        raise UserError(f"{where} needs a value{key}; leave it out for the default")
    base = next(k for k in kinds if k != "None")
    # bool is an int to Python, but `batch_size: true` is a mistake, not 1
    if isinstance(value, bool) != (base == "bool") or not isinstance(value, _KINDS[base]):
        kind = {"int": "an integer", "float": "a number", "bool": "true or false"}.get(base, "text")
        kind += " or auto" if f.metadata.get("auto") else ""
        raise UserError(f"{where} must be {kind}, got {value!r}, a {type(value).__name__}{key}")
    m = f.metadata
    if "choices" in m and value not in m["choices"]:
        raise UserError(f"{where} must be one of {', '.join(map(str, m['choices']))}, got {value!r}{key}")
    if base in ("int", "float") and isinstance(value, int | float):  # always a number here (checked above)
        if not math.isfinite(value):
            raise UserError(f"{where} must be a finite number, got {value}{key}")
        lo, hi = m.get("min", m.get("gt", -math.inf)), m.get("max", m.get("lt", math.inf))
        if value < lo or value > hi or value == m.get("gt") or value == m.get("lt"):
            raise UserError(f"{where} must be {_allowed(m)}, got {value}{key}")


def _allowed(m: Mapping[str, Any]) -> str:
    """A field's bounds in words: "in [0, 1]", "a positive number", "at least 2"."""
    lo = f"[{m['min']}" if "min" in m else f"({m['gt']}" if "gt" in m else None
    hi = f"{m['max']}]" if "max" in m else f"{m['lt']})" if "lt" in m else None
    if lo and hi:
        return f"in {lo}, {hi}"
    if m.get("gt") == 0:
        return "a positive number"
    if "min" in m:
        return f"at least {m['min']}"
    if "gt" in m:
        return f"greater than {m['gt']}"
    return f"at most {m['max']}" if "max" in m else f"less than {m['lt']}"


@dataclass
class DataConfig:
    """Which images to pre-train on and where to find them."""

    dataset: str = _f(
        "digits",
        "digits (bundled, offline), cifar10, stl10 or folder",
        choices=("digits", "cifar10", "stl10", "folder"),
        label="Dataset",
    )
    data_path: str | None = _f(
        None,
        "image folder for --dataset folder: class sub-folders give labels; train/ and test/ sub-folders give splits",
        label="Image folder",
    )
    data_dir: str = _f("data", "where torchvision datasets are downloaded and decoded images cached")
    train_split: str | None = _f(
        None, "split to pre-train on (default: cifar10 train, stl10 train+unlabeled, folder train or all)"
    )
    # At most 2048: ImageNet-size work (views up to 1024 px) fits; larger sides ask terabytes of the cache.
    image_size: int | None = _f(
        None, "side of the stored square images (default: native size; 96 for folders of mixed sizes)", min=8, max=2048
    )
    subset: int | None = _f(None, "pre-train on a fixed random subset of this many images", min=2)
    download: bool = _f(True, "download cifar10/stl10 into --data-dir when missing")
    transductive: bool = _f(
        False,
        "a folder with one labelled split only: also pre-train on the fifth held out "
        "as kNN and linear-probe queries (their figures are then marked transductive)",
    )


@dataclass
class ViewConfig:
    """The SimCLR view transform (Chen et al. 2020, appendix A); defaults are the paper's ImageNet values."""

    crop_size: int | None = _f(
        None,
        "side of each view in pixels (default: the stored image side)",
        min=8,
        max=2048,
        label="View size (pixels)",
    )
    # A slider starts at 0.01: a crop needs a positive area.
    crop_scale_min: float = _f(
        0.08,
        "smallest crop area as a fraction of the image",
        gt=0,
        max=1,
        label="Smallest crop area",
        ui_min=0.01,
        step=0.01,
    )
    crop_scale_max: float = _f(
        1.0,
        "largest crop area as a fraction of the image",
        gt=0,
        max=1,
        label="Largest crop area",
        ui_min=0.01,
        step=0.01,
    )
    flip_prob: float = _f(
        0.5, "probability of a horizontal flip", min=0, max=1, label="Horizontal flip probability", step=0.05
    )
    jitter_strength: float | None = _f(
        None,
        f"colour-distortion strength s (default: the paper's {AUTO_VIEWS['jitter_strength'][1]}, or its CIFAR "
        f"{AUTO_VIEWS['jitter_strength'][0]} for images of {SMALL_IMAGE} px or less)",
        min=0,
        label="Colour jitter strength",
        ui_max=2.0,
        step=0.1,
    )
    jitter_prob: float = _f(
        0.8, "probability of colour jitter", min=0, max=1, label="Colour jitter probability", step=0.05
    )
    grayscale_prob: float = _f(
        0.2, "probability of converting a view to grayscale", min=0, max=1, label="Grayscale probability", step=0.05
    )
    blur_prob: float | None = _f(
        None,
        f"probability of Gaussian blur (default: {AUTO_VIEWS['blur_prob'][1]}, or {AUTO_VIEWS['blur_prob'][0]} for "
        f"images of {SMALL_IMAGE} px or less, as the paper's CIFAR setting)",
        min=0,
        max=1,
        label="Blur probability",
        step=0.05,
    )
    # A slider starts at 0.05, as a sigma of 0 blurs nothing (the blur probability turns blur off).
    blur_sigma_min: float = _f(
        0.1,
        "smallest blur sigma in pixels",
        min=0,
        label="Smallest blur sigma (pixels)",
        ui_min=0.05,
        ui_max=5.0,
        step=0.05,
    )
    blur_sigma_max: float = _f(
        2.0,
        "largest blur sigma in pixels",
        min=0,
        label="Largest blur sigma (pixels)",
        ui_min=0.05,
        ui_max=5.0,
        step=0.05,
    )
    solarize_prob: float = _f(
        0.0,
        "probability of solarizing a view (0 in SimCLR; BYOL uses 0.2)",
        min=0,
        max=1,
        label="Solarize probability",
        step=0.05,
    )
    # Progressive resolution (Kocyigit, Hospedales, Bilen 2022, arXiv 2212.05611): small views early make
    # early epochs cheap; the side grows linearly to the full view size.
    progressive_start: float = _f(
        1.0,
        "progressive resolution: the view side at the start of training, as a share of the full view size "
        "(1: off); it grows to the full size over --progressive-share of the run, in steps of 8 px",
        gt=0,
        max=1,
        label="Starting view size (share)",
        step=0.05,
    )
    progressive_share: float = _f(
        0.5, "progressive resolution: the share of the run over which views grow to the full size", gt=0, max=1
    )

    @classmethod
    def cifar(cls) -> ViewConfig:
        """The paper's CIFAR-10 views (Chen et al. 2020, appendix B.9): colour strength 0.5, no blur."""
        return cls(jitter_strength=0.5, blur_prob=0.0)

    @classmethod
    def imagenet(cls) -> ViewConfig:
        """The paper's ImageNet views (Chen et al. 2020, appendix A): colour strength 1.0, blur p = 0.5."""
        return cls(jitter_strength=1.0, blur_prob=0.5)

    def resolved(self, image_side: int) -> ViewConfig:
        """A copy with the "auto" values for images of ``image_side`` px filled (part of
        :func:`simclr_core.resolve.resolve`): the view size, and the paper's CIFAR colour and blur for small images."""
        small = image_side <= SMALL_IMAGE
        auto = {k: v[0] if small else v[1] for k, v in AUTO_VIEWS.items()}
        return replace(
            self,
            crop_size=self.crop_size or image_side,
            jitter_strength=auto["jitter_strength"] if self.jitter_strength is None else self.jitter_strength,
            blur_prob=auto["blur_prob"] if self.blur_prob is None else self.blur_prob,
        )

    def size_at(self, progress: float) -> int:
        """The view side at ``progress`` (0 to 1) through the run, of a :meth:`resolved` config: the full size,
        or with progressive resolution a multiple of 8 px growing to it (few shapes, for cuDNN and compile)."""
        full = resolved(self.crop_size, "views.crop_size")
        if self.progressive_start >= 1:
            return full
        grown = self.progressive_start + (1 - self.progressive_start) * min(1.0, progress / self.progressive_share)
        return max(8, min(full, round(full * grown / 8) * 8))

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`simclr_core.views.simclr_view`, of a :meth:`resolved` config."""
        return dict(
            size=resolved(self.crop_size, "views.crop_size"),
            crop_scale=(self.crop_scale_min, self.crop_scale_max),
            flip_prob=self.flip_prob,
            jitter_strength=resolved(self.jitter_strength, "views.jitter_strength"),
            jitter_prob=self.jitter_prob,
            grayscale_prob=self.grayscale_prob,
            blur_prob=resolved(self.blur_prob, "views.blur_prob"),
            blur_sigma=(self.blur_sigma_min, self.blur_sigma_max),
            solarize_prob=self.solarize_prob,
        )


@dataclass
class ModelConfig:
    """Encoder and projection head."""

    backbone: str = _f(
        "resnet18",
        "resnet18, resnet34, resnet50 (torchvision) or resnet_mini (small, trains in minutes on a CPU)",
        choices=("resnet18", "resnet34", "resnet50", "resnet_mini"),
        label="Backbone",
    )
    cifar_stem: bool | None = _f(
        None, "3x3 stride-1 first conv and no max-pool (default: on for images of 64 px or less)", label="CIFAR stem"
    )
    head: str | None = _f(
        None,
        "projection head as its paper has it: simclr (BN after every layer), moco_v2 "
        "(no BN), byol (BN after the hidden layer)",
        choices=HEAD_NAMES,
    )
    proj_hidden_dim: int | None = _f(
        None,
        "projection MLP hidden width (default: the backbone width; twice it "
        "for the byol head, the paper's 4096 on a ResNet-50)",
        min=1,
        max=65536,
        label="Projection hidden width",
        step=64,
    )
    proj_out_dim: int | None = _f(
        None,
        "projection output dimension",
        min=1,
        max=65536,
        label="Projection output dim",
        step=32,
    )
    proj_layers: int = _f(2, "linear layers in the projection MLP (SimCLR v1: 2, v2: 3)", min=1, max=16)
    proj_bn: bool | None = _f(None, "batch norm in the projection MLP")


@dataclass
class MethodConfig:
    """The self-supervised method and its loss and momentum settings; None means the method's default."""

    name: str = _f(
        "simclr",
        "self-supervised method (simclr_core.methods.METHODS)",
        choices=METHOD_NAMES,
        option="method",
        label="Method",
    )
    temperature: float | None = _f(
        None,
        "softmax temperature tau of simclr's NT-Xent and moco_v2's InfoNCE",
        gt=0,
        label="Temperature",
        step=0.05,
        format="%.3f",
    )

    ema: float | None = _f(
        None,
        "momentum m of the EMA key/target encoder (BYOL's ImageNet value is 0.996)",
        min=0,
        max=1,
        label="EMA momentum m",
        step=0.001,
        format="%.4f",
    )
    ema_schedule: str | None = _f(
        None,
        "constant, or cosine from m to 1",
        choices=("constant", "cosine"),
        label="Momentum schedule",
    )
    queue_size: int = _f(
        4096,
        "moco_v2: negatives kept in the queue, K (paper: 65536 on ImageNet)",
        min=1,
        max=2**20,
        ui_min=1024,  # a slider over the whole range would be too wide to slide
        ui_max=65536,
        label="MoCo queue size K",
        step=1024,
    )
    moco_symmetric: bool = _f(
        False, "moco_v2: symmetric loss, each view a query for the other's key", label="MoCo symmetric loss"
    )
    key_bn_splits: int = _f(
        8,
        "moco_v2: the key batch is shuffled and cut into this many batch-norm parts "
        "(shuffle BN, so keys do not share statistics with their queries)",
        min=1,
    )
    pred_hidden_dim: int | None = _f(
        None,
        "byol: predictor hidden width (default: the projection's hidden width)",
        min=1,
        max=65536,
        label="BYOL predictor hidden width",
        step=64,
    )
    # Off only to watch a run collapse on purpose (the collapse alarm's test): "removing the predictor ... leads
    # to a collapsed representation" (Grill et al. 2020, section 5 and table 5a).
    predictor: bool = _f(
        True,
        "byol: the online network's predictor q; without it BYOL collapses (Grill et al. 2020, table 5a), "
        "so turn it off only to see a collapse",
        label="BYOL predictor",
    )


@dataclass
class OptimConfig:
    """Optimiser, schedule and numerics."""

    epochs: int = _f(100, "number of pre-training epochs", min=1, label="Epochs", step=1)
    # 2 at least: with one image a step has no negatives and batch norm no batch, and the loss is 0.
    # "auto" (None) needs the device, so the trainer decides it (simclr_core.training.memory.auto_batch).
    batch_size: int | None = _f(
        256,
        "images per step (each gives two views), or auto: on a CUDA GPU the largest power of two whose step "
        f"fits with {AUTO_BATCH_FREE:.0%} of the GPU's memory kept free (for the kNN monitor); elsewhere "
        f"{AUTO_BATCH_CPU}, or less if the free memory holds less",
        min=2,
        auto=True,
        label="Batch size",
        step=32,
    )
    optimizer: str = _f(
        "sgd", "sgd (momentum) or lars (the paper's, for large batches)", choices=("sgd", "lars"), label="Optimiser"
    )
    lr: float | None = _f(
        None,
        "peak learning rate (default: linear scaling, "
        + ", ".join(f"{v}*B/256 for {k}" for k, v in LR_PER_256.items())
        + ")",
        gt=0,
        max=100,  # LARS's 0.3*B/256 is 77 at a batch of 65536; far above, float32 steps overflow
        label="Learning rate",
    )
    momentum: float = _f(0.9, "SGD / LARS momentum", min=0, lt=1)
    weight_decay: float | None = _f(
        None,
        "weight decay, not applied to biases and batch-norm (default: "
        + ", ".join(f"{v:g} {k}" for k, v in WEIGHT_DECAY.items())
        + ")",
        min=0,
    )
    warmup_epochs: float | None = _f(
        None,
        f"linear warm-up epochs before the cosine decay (default: {WARMUP_EPOCHS:g}, or "
        f"{WARMUP_SHARE:g} x epochs if less)",
        min=0,
    )
    precision: str = _f(
        "auto",
        "auto (bf16 autocast on CUDA, fp32 on CPU), bf16, fp16 or fp32",
        choices=("auto", "bf16", "fp16", "fp32"),
    )

    def default_lr(self) -> float:
        """The peak learning rate when ``lr`` is "auto": linear scaling of the batch (:data:`LR_PER_256`)."""
        return LR_PER_256[self.optimizer] * resolved(self.batch_size, "optim.batch_size") / 256

    def resolved(self) -> OptimConfig:
        """A copy with the "auto" values filled (part of :func:`simclr_core.resolve.resolve`).

        A batch size left "auto" stays so, and with it an "auto" learning rate that scales with it: only the
        trainer can decide the batch, on its device (:func:`simclr_core.training.session.prepare`)."""
        auto_lr = None if self.batch_size is None else self.default_lr()
        return replace(
            self,
            lr=auto_lr if self.lr is None else self.lr,
            weight_decay=WEIGHT_DECAY[self.optimizer] if self.weight_decay is None else self.weight_decay,
            warmup_epochs=(
                min(WARMUP_EPOCHS, self.epochs * WARMUP_SHARE) if self.warmup_epochs is None else self.warmup_epochs
            ),
        )


@dataclass
class RunConfig:
    """Where the run lives, what it runs on and how often it reports."""

    name: str | None = _f(
        None, "run name, the folder under --runs-dir (default: dataset-backbone-time)", label="Run name"
    )
    runs_dir: str = _f("checkpoints", "folder holding one sub-folder per run")
    device: str = _f("auto", "auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps")
    seed: int = _f(0, "seed of weights, data order and views", min=0, max=2**32 - 1)  # NumPy's and torch's range
    knn_every: int = _f(
        1, "run the kNN monitor every N epochs (0: never)", min=0, label="kNN monitor every N epochs", step=1
    )
    knn_k: int = _f(200, "neighbours in the kNN monitor", min=1)
    knn_max_bank: int | None = _f(None, "cap on memory-bank images for the kNN monitor (default: all)", min=1)
    probe: bool = _f(
        True,
        "at every monitor epoch, embed a fixed probe subset into <run>/probe/ (the app's "
        "'over training' view) and log its label-free health: RankMe, alpha-ReQ, LiDAR, alignment, uniformity, "
        "pseudo-label kNN",
    )
    probe_size: int = _f(
        2000,
        "images in the probe subset, from the kNN query split, stratified by class "
        "(the training split when there are no labels)",
        min=1,
    )
    keep_best: str | None = _f(
        None,
        "keep the checkpoint of the monitor epoch with the best value of this signal as best.pt beside last.pt "
        "(label-free: " + ", ".join(LABEL_FREE_SIGNALS) + "; knn_top1 needs labels); simclr-export, "
        "simclr-embed and simclr-evaluate read it with --checkpoint best (default: none)",
        choices=KEEP_BEST_SIGNALS,
        label="Keep the best checkpoint by",
    )
    log_every: int = _f(10, "append a metrics line every N steps", min=1)
    tensorboard: bool = _f(
        True,
        "also write TensorBoard scalars into the run folder (tensorboard --logdir "
        "checkpoints), when the tensorboard package is installed",
    )
    num_threads: int | None = _f(None, "CPU threads for torch (default: torch's choice)", min=1, max=1024)
    workers: int | None = _f(
        None,
        "processes that gather batches from the on-disk image cache when the "
        "images do not fit on the GPU (default: 4 then, else 0: none needed)",
        min=0,
        max=256,
    )
    compile: bool = _f(False, "torch.compile the model (falls back to eager, with a note, if compiling fails)")
    sync_bn: bool = _f(
        False,
        "under torchrun on GPUs: batch-norm statistics over every process's images "
        "(SyncBatchNorm) instead of each process's own slice",
    )


@dataclass
class TrainConfig:
    """Everything that defines a run; saved as ``config.json``."""

    data: DataConfig = field(default_factory=DataConfig)
    views: ViewConfig = field(default_factory=ViewConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready nested dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a nested dict; unknown keys are an error naming the known ones.

        A recipe's ``recipe`` block (title, expected result, source; :mod:`simclr_core.zoo`) is
        metadata, not a setting, and is left out.
        """
        if not isinstance(d, dict):
            raise UserError("a config file must hold a mapping of sections (data, views, model, method, optim, run)")
        d = _upgrade({k: v for k, v in d.items() if k != "recipe"})
        parts = {}
        for f in fields(cls):
            section = d.get(f.name)
            if section is None:
                section = {}
            if not isinstance(section, dict):
                raise UserError(f"config section '{f.name}' must be a mapping of settings, got {section!r}")
            sub_cls = _section_class(f)
            known = {sf.name for sf in fields(sub_cls)}
            unknown = set(section) - known
            if unknown:
                raise UserError(
                    f"unknown key(s) {sorted(unknown)} in config section '{f.name}'; known: {sorted(known)}"
                )
            parts[f.name] = sub_cls(**section)
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise UserError(
                f"unknown config section(s) {sorted(unknown)}; known: data, views, model, method, optim, run"
            )
        cfg = cls(**parts)
        cfg.validate()
        return cfg

    def save(self, path: str | Path) -> None:
        """Write as indented JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a JSON or YAML (``.yaml``/``.yml``) config file."""
        return cls.from_dict(read_file(path))

    def validate(self) -> None:
        """Reject values no run can use, with a message naming the flag: each field's own rules
        (type, choices, bounds; see :func:`_f`), then the rules between fields. The word "auto" in a
        field that takes it becomes None here, for every source of settings."""
        for section, cls in sections().items():
            part = getattr(self, section)
            if not isinstance(part, cls):
                raise UserError(f"config section '{section}' must be a {cls.__name__}, got {part!r}")
            for f in fields(cls):
                if f.metadata.get("auto") and getattr(part, f.name) == "auto":  # from a flag or a file
                    setattr(part, f.name, None)
                check_field(section, f, getattr(part, f.name))
        v = self.views
        if v.crop_scale_min > v.crop_scale_max:
            raise UserError("need --crop-scale-min <= --crop-scale-max")
        if v.blur_sigma_min > v.blur_sigma_max:
            raise UserError("need --blur-sigma-min <= --blur-sigma-max")
        if self.data.dataset == "folder" and not self.data.data_path:
            raise UserError("--dataset folder needs --data-path DIR (a folder of images or class sub-folders)")
        if self.run.name is not None:
            check_run_name(self.run.name)
        best = self.run.keep_best
        if best is not None and not self.run.knn_every:
            raise UserError(f"--keep-best {best} compares monitor epochs; --knn-every 0 runs none: set --knn-every 1")
        if best in LABEL_FREE_SIGNALS and not self.run.probe:
            raise UserError(f"--keep-best {best} is measured on the probe, which --no-probe turns off; drop --no-probe")


def sets_fields(d: Any) -> bool:
    """True when a config file's mapping (:func:`read_file`) sets at least one setting; a file holding only
    a ``recipe:`` block, or empty sections, sets none, and a run of it trains every default."""
    if not isinstance(d, dict):
        return True  # not a mapping: from_dict says what is wrong
    return any(v is not None and (not isinstance(v, dict) or v) for k, v in d.items() if k != "recipe")


def read_file(path: str | Path) -> Any:
    """The mapping in a JSON or YAML (``.yaml``/``.yml``) config file, parsed but not checked; a UserError
    when it cannot be read or parsed."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {p} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"config file {p} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise UserError(f"cannot read config file {p}: {e.strerror or e}") from None
    try:
        if p.suffix in (".yaml", ".yml"):
            d = _read_yaml(text)
        else:
            d = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise UserError(f"cannot parse config file {p}: {e}".splitlines()[0]) from None
    return d


# Keys that config files of 0.2 and earlier keep elsewhere: section.key -> where it lives now.
_MOVED = {("model", "method"): ("method", "name"), ("optim", "temperature"): ("method", "temperature")}


def _upgrade(d: dict[str, Any]) -> dict[str, Any]:
    """A config dict in today's layout; older files (``model.method``, ``optim.temperature``) still load."""
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    for (old, key), (new, to) in _MOVED.items():
        part = d.get(old)
        if not isinstance(part, dict) or key not in part:
            continue
        if d.get(new) is None:  # absent, or an empty YAML section
            d[new] = {}
        target = d[new]
        if not isinstance(target, dict):
            continue  # from_dict names the broken section
        value = part.pop(key)
        if to in target and target[to] != value:
            raise UserError(
                f"config key {old}.{key} ({value!r}) and {new}.{to} ({target[to]!r}) disagree; keep {new}.{to} only"
            )
        target[to] = value
    return d


_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _read_yaml(text: str) -> Any:
    """YAML as people write it: ``5e-4`` is a number (PyYAML follows YAML 1.1, where it is text)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # YAML 1.2's float: no dot needed before the exponent
    number = re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", number, list("-+0123456789."))
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass


def check_run_name(name: object) -> str:
    """Return ``name`` if it is a safe single folder name, else raise UserError."""
    if not isinstance(name, str) or not _RUN_NAME.fullmatch(name) or ".." in name:  # fullmatch: no trailing newline
        raise UserError(
            f"invalid run name {name!r}: use letters, digits, '.', '_' and '-' "
            "(no '/', no '..', at most 100 characters)"
        )
    return name


def _section_class(f: dataclasses.Field[Any]) -> type[Any]:
    """The dataclass of a :class:`TrainConfig` section: the field's default factory."""
    factory = f.default_factory
    if not isinstance(factory, type):
        raise TypeError(f"config section {f.name!r} has no dataclass default factory")
    return factory


def sections() -> dict[str, type]:
    """Section name -> dataclass, in CLI order."""
    return {f.name: _section_class(f) for f in fields(TrainConfig)}
