"""The command lines, one module each (``simclr-train``, ``simclr-evaluate``, ``simclr-embed``,
``simclr-export``, ``simclr-studio``), and :mod:`~simclr_core.cli.common`, the flags they share."""
