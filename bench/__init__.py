"""Benchmark, load and crash drivers. Not product code: nothing in the product imports this."""
