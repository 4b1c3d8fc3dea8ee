"""Evaluation of trained models: prediction, metrics, shift and OOD, report files, tables.

Modules: `predict` (logits over whole splits, clean and temperature-scaled metrics),
`robustness` (corrupted inputs and OOD detection), `report` (the evaluation stage and its
JSON / markdown files), `plots` (PNG figures), `compare` (one table over many runs,
`python -m cud_jax.compare`). Nothing here imports the training loop.
"""
