"""Sans-IO PostgreSQL wire protocol: framing, the messages pgkeep decodes or sends, value codecs."""
from . import framing, messages, values

__all__ = ["framing", "messages", "values"]
