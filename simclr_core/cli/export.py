"""Export a run's backbone: ``simclr-export --run NAME --format F`` (:func:`simclr_core.exporters.export_backbone`)."""

from __future__ import annotations

import argparse
import sys

from simclr_core.cli.common import Parser, run_cli
from simclr_core.exporters import FORMATS, HOW_TO_LOAD, export_backbone
from simclr_core.runs.rundir import default_runs_dir, open_run


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="simclr-export",
        description="Export a run's trained backbone as safetensors, a timm state dict, ONNX or TorchScript.",
    )
    p.add_argument("--run", required=True, help="run name (a folder under --runs-dir)")
    p.add_argument(
        "--runs-dir", default=str(default_runs_dir()), help="folder of runs [default: $SIMCLR_RUNS_DIR or checkpoints]"
    )
    p.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        dest="fmt",
        help="safetensors (weights + metadata), timm (timm state dict), onnx (onnxruntime, normalisation "
        "inside), torchscript (traced, normalisation inside)",
    )
    p.add_argument(
        "--checkpoint",
        default="last",
        help="'last', 'best' (best.pt, kept by a run trained with --keep-best) or a checkpoint path [default: last]",
    )
    p.add_argument("--out", help="output file [default: <run>/export/<run><suffix>, <run>-best<suffix> for best]")
    return p


def main(argv: list[str] | None = None) -> int:
    def go() -> int:
        args = build_parser().parse_args(argv)
        run = open_run(args.runs_dir, args.run)
        path = export_backbone(run, args.fmt, args.out, checkpoint=args.checkpoint)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
        print(HOW_TO_LOAD[args.fmt].format(path=path))
        return 0

    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
