"""Test support: real PostgreSQL clusters and real pgkeep processes on free ports."""
