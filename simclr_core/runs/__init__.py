"""The run folder, the one place through which training and its watchers (the app, the CLIs) talk.

- :mod:`~simclr_core.runs.rundir`: :class:`~simclr_core.runs.rundir.RunDir`, the owner of a run's files
  and their atomic writes (config, status, metrics, the writer lock);
- :mod:`~simclr_core.runs.checkpoints`: the one reader and writer of weights (``weights_only=True``);
- :mod:`~simclr_core.runs.tboard`: TensorBoard scalars beside ``metrics.jsonl``;
- :mod:`~simclr_core.runs.launch`: start, stop and resume training in a process of its own;
- :mod:`~simclr_core.runs.manage`: archive, restore, rename and annotate runs.
"""
