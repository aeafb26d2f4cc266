"""Rewrites of clinical notes for measuring the fidelity judge: see independent.py.

bench/ has no __init__.py: it is a folder of scripts. With the repository root on sys.path (pytest's
``pythonpath = ["."]``, ``python -m ...`` from the root, or ``PYTHONPATH=.``), ``bench`` imports as a namespace
package, so ``from bench.rewrites.independent import clinical_rewording`` works from tests and scripts alike.
"""
