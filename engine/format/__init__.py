"""The backup format of docs/FORMAT.md, without I/O: envelope, layout, manifest, COPY decoding."""
from . import envelope, layout, manifest

__all__ = ["envelope", "layout", "manifest"]
