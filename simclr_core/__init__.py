"""SimCLR Studio's engine: self-supervised contrastive learning of image representations.

No streamlit here: the app in ``pages/`` and the CLIs (``python -m simclr_core.train``,
``.evaluate``, ``.embed``) both call this library.
"""

from simclr_core.errors import UserError

__all__ = ["UserError"]
