"""``python -m simclr_core.train``: the documented entry point of headless training, also torchrun's ``-m``.

It stays at this address for users' scripts and SLURM files; the command line lives in
:mod:`simclr_core.cli.train`, beside the other commands.
"""

import sys

from simclr_core.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
