"""Evaluation of frozen representations.

- :mod:`~simclr_core.evaluation.classifiers`: the weighted kNN classifier and the linear probe;
- :mod:`~simclr_core.evaluation.run`: a run's evaluation (``simclr-evaluate``, the app's job);
- :mod:`~simclr_core.evaluation.compare`: runs side by side;
- :mod:`~simclr_core.evaluation.health`: measures that need no labels.
"""
