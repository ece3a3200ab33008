"""The embeddings explorer's computations, made in a background worker and kept on disk.

- :mod:`~simclr_core.explorer.jobs`: the worker process and its job files;
- :mod:`~simclr_core.explorer.compute`: what each job makes (maps, trajectories, exports);
- :mod:`~simclr_core.explorer.projection`, :mod:`~simclr_core.explorer.neighbours`,
  :mod:`~simclr_core.explorer.scores`: UMAP / t-SNE / PCA, nearest neighbours, what points are ranked by;
- :mod:`~simclr_core.explorer.probe`: the probe frames that show the space forming over training;
- :mod:`~simclr_core.explorer.thumbnails`, :mod:`~simclr_core.explorer.tags`,
  :mod:`~simclr_core.explorer.tables`: hover images, named selections, CSV / NPZ tables.
"""
