"""Benchmarks of relidar's parts against references (spconv), with JSON output."""
