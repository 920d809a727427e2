"""Benchmarks, each printing ratios against its anchor (see bench/README.md)."""
