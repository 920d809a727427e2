"""pgkeep's proxy: the pgwire server, sessions, the statement language and command dispatch.
Depends on `engine` and `catalog`; nothing depends on it."""

__all__: list[str] = []
