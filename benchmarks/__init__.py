"""Benchmarks of perceiver-serve: the model library side by side with transformers.

``python -m benchmarks.run`` runs the model benchmark (see ``README.md``); the reporting
helpers in :mod:`benchmarks.report` are shared with benchmarks of the running server.
"""
