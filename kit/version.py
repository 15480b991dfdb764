"""kit's version: one fact, in the lowest layer, so run folders, exports and kernels can name it without
importing the ``kit`` package's notebook API (which sits above every stage)."""

__version__ = "0.1.0"
