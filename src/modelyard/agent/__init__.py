"""Continuous training: ``modelyard agent`` turns alerts into retrains, gates and canaries.

See ``docs/continuous-training.md``.
"""
