"""workbench: spectral and geometric probes of CLIP-like contrastive representations.

Entry points: :func:`load_encoder`, :func:`load_dataset`, :func:`embed`, and the subpackages
``probes``, ``methods``, ``train`` and ``viz``.
"""

from __future__ import annotations

__version__ = "0.1.0"
