"""Export embeddings: ``python -m simclr_core.cli.embed --run NAME --split test --out FILE.npz``.

The ``.npz`` holds ``embeddings`` (N, F) float32, ``labels`` (N,) int64 (-1 unlabelled),
``indices`` (N,) int64 into the split, and ``classes``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from simclr_core.cli.common import Parser, run_cli
from simclr_core.embeddings import FEATURES, embed_split
from simclr_core.errors import UserError
from simclr_core.hardware import resolve_device
from simclr_core.runs.rundir import open_run


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m simclr_core.cli.embed", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run name (a folder under --runs-dir)")
    p.add_argument("--runs-dir", default="checkpoints", help="folder of runs [default: checkpoints]")
    p.add_argument("--split", default="test", help="dataset split to embed [default: test]")
    p.add_argument("--out", required=True, help="output .npz file")
    p.add_argument(
        "--feature",
        choices=FEATURES,
        default="h",
        help="h: backbone features (for kNN, probes, plots); z: projection [default: h]",
    )
    p.add_argument("--checkpoint", default="last", help="'last' or a checkpoint path [default: last]")
    p.add_argument("--random-init", action="store_true", help="embed with a random-init backbone (baseline)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N [default: auto]")
    return p


def main(argv: list[str] | None = None) -> int:
    def go() -> int:
        args = build_parser().parse_args(argv)
        resolve_device(args.device)  # a GPU that is not there is said at once, cached embeddings or not
        out = Path(args.out)
        if out.is_dir():
            raise UserError(f"--out {out} is a folder; give a file name such as {out / 'embeddings.npz'}")
        if not out.parent.is_dir():
            raise UserError(f"--out: the folder {out.parent} does not exist; create it or choose another")
        run = open_run(args.runs_dir, args.run)
        emb = embed_split(
            run, args.split, args.feature, checkpoint=args.checkpoint, device=args.device, random_init=args.random_init
        )
        try:
            emb.save_npz(out)
        except OSError as e:
            raise UserError(f"cannot write --out {out} ({e.strerror or e}); choose a writable place") from None
        print(
            f"wrote {args.out}: {emb.embeddings.shape[0]} x {emb.embeddings.shape[1]} {args.feature} "
            f"embeddings of {run.name}/{args.split}"
        )
        return 0

    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
