"""Benchmarks shipped with the package (``vla-ros bench ...``); each returns one JSON dict."""
