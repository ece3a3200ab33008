"""Export embeddings: ``python -m simclr_core.cli.embed --run NAME --split test --out FILE.npz``.

The ``.npz`` holds ``embeddings`` (N, F) float32, ``labels`` (N,) int64 (-1 unlabelled),
``indices`` (N,) int64 into the split, and ``classes``. The split is embedded chunk by chunk into the run's
cache and the file copied from there, so memory stays bounded however many rows it has. Under
``torchrun --nproc-per-node N -m simclr_core.cli.embed --run-name NAME ...`` every rank embeds a shard and
rank 0 joins them and writes ``--out`` (torchrun reads ``--run`` as its own ``--run-path``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from simclr_core import distributed
from simclr_core.cli.common import Parser, run_cli
from simclr_core.embeddings import FEATURES, cache_embeddings, cached_shape, embed_split
from simclr_core.errors import UserError
from simclr_core.hardware import resolve_device
from simclr_core.runs.rundir import open_run


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m simclr_core.cli.embed", description=__doc__.splitlines()[0])
    p.add_argument(
        "--run",
        "--run-name",  # the spelling torchrun lets through (it takes --run for its own --run-path)
        dest="run",
        required=True,
        help="run name (a folder under --runs-dir); --run-name under torchrun",
    )
    p.add_argument("--runs-dir", default="checkpoints", help="folder of runs [default: checkpoints]")
    p.add_argument("--split", default="test", help="dataset split to embed [default: test]")
    p.add_argument("--out", required=True, help="output .npz file")
    p.add_argument(
        "--feature",
        choices=FEATURES,
        default="h",
        help="h: backbone features (for kNN, probes, plots); z: projection [default: h]",
    )
    p.add_argument(
        "--checkpoint",
        default="last",
        help="'last', 'best' (best.pt, kept by a run trained with --keep-best) or a checkpoint path [default: last]",
    )
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
        how = {"checkpoint": args.checkpoint, "device": args.device, "random_init": args.random_init}
        distributed.setup(resolve_device(args.device).type)  # under torchrun: a shard per rank
        main = distributed.is_main()
        try:
            cache = cache_embeddings(run, args.split, args.feature, **how)
        finally:
            distributed.cleanup()
        if not main:
            return 0  # rank 0 writes --out
        tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.npz")
        try:
            if cache is not None:  # a file copy: the embeddings never all in memory
                shutil.copyfile(cache, tmp)
                shape = cached_shape(tmp)
            else:  # the run folder cannot be written: embedded in memory
                emb = embed_split(run, args.split, args.feature, **how)
                emb.save_npz(tmp)
                shape = emb.embeddings.shape
            os.replace(tmp, out)
        except OSError as e:
            raise UserError(f"cannot write --out {out} ({e.strerror or e}); choose a writable place") from None
        finally:
            tmp.unlink(missing_ok=True)
        rows, width = shape or (0, 0)
        print(f"wrote {args.out}: {rows} x {width} {args.feature} embeddings of {run.name}/{args.split}")
        return 0

    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
