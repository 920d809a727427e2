"""pgkeep's catalog: privileges, jobs, schedules, external connections and cluster settings,
stored in the upstream PostgreSQL (schema `pgkeep`, versioned migrations). Depends on nothing
else in pgkeep."""
from .connections import (ConnectionStore, DuplicateConnection, ExternalConnection,
                          UndefinedConnection)
from .db import Catalog
from .privileges import APPLICABLE as APPLICABLE_PRIVILEGES
from .privileges import Grant, Privilege, PrivilegeStore, Target, UndefinedRole
from .errors import CatalogError, InvalidSettingValue, UnknownSetting
from .settings import SETTINGS, Setting, format_value, lookup

__all__ = ["ConnectionStore", "DuplicateConnection", "ExternalConnection", "UndefinedConnection",
           "Catalog", "CatalogError", "InvalidSettingValue", "UnknownSetting", "SETTINGS", "Setting",
           "format_value", "lookup", "APPLICABLE_PRIVILEGES", "Grant", "Privilege", "PrivilegeStore", "Target", "UndefinedRole"]
