"""The modelyard version, in a module of its own so any layer can read it.

>>> __version__
'0.1.0'
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
