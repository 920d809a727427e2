"""Object stores behind one protocol (base.py); `open_store` picks the backend by URI scheme."""
from .base import ObjectInfo, ObjectStore, ObjectWriter, create, put, read_all
from .registry import StoreContext, join_uri, open_store

__all__ = ["ObjectInfo", "ObjectStore", "ObjectWriter", "create", "put", "read_all", "StoreContext",
           "join_uri", "open_store"]
