"""Errors raised by the catalog, each with its SQLSTATE (duck-typed: the proxy renders any
exception with a `sqlstate` attribute as an ErrorResponse)."""
from __future__ import annotations

__all__ = ["CatalogError", "UnknownSetting", "InvalidSettingValue"]


class CatalogError(Exception):
    sqlstate = "XX000"
    severity = "ERROR"
    detail: str | None = None
    hint: str | None = None
    position: int | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UnknownSetting(CatalogError):
    sqlstate = "42704"


class InvalidSettingValue(CatalogError):
    sqlstate = "22023"
