"""Evaluation: batched inference with flip TTA, per-slice and per-volume metrics, statistics, and the test-split
scoring that writes per_slice.csv, per_volume.csv and summary.json.

Imports data, model and the ground floor; never training.
"""
