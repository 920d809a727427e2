"""Object stores behind one protocol (base.py); `open_store` picks the backend by URI scheme."""
from .base import Listed, ObjectInfo, ObjectStore, ObjectWriter, PrefixInfo, create, put, read_all
from .registry import StoreContext, join_uri, open_store

__all__ = ["Listed", "ObjectInfo", "ObjectStore", "ObjectWriter", "PrefixInfo", "create", "put",
           "read_all", "StoreContext", "join_uri", "open_store"]
