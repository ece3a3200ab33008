"""The data: every dataset as uint8 tensors, and the folders the app may read.

- :mod:`~simclr_core.data.datasets`: bundled digits, CIFAR-10, STL-10 and image folders, their splits
  (:func:`~simclr_core.data.datasets.load_split` and the helpers that pick and hold out splits);
- :mod:`~simclr_core.data.imageset`: :class:`~simclr_core.data.imageset.ImageSet`, one split as a uint8 tensor;
- :mod:`~simclr_core.data.folder`: scanning an image folder: its classes, files and the entries skipped;
- :mod:`~simclr_core.data.decode`: decoding a folder's image files in a pool of worker processes;
- :mod:`~simclr_core.data.cache`: the decoded-image cache on disk (or in memory when the disk refuses it);
- :mod:`~simclr_core.data.roots`: which folders the app may read images from;
- :mod:`~simclr_core.data.preview`: positive pairs from the training views, for the app to show.
"""
