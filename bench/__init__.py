"""Benchmarks for bulkapi, run on demand (never collected by pytest): ``python -m bench``.

Every case is measured beside its baseline in the same run, because the machines here
are shared and noisy: the ratios are the claim, the absolute numbers are context.
"""
