"""The pipeline: the six stages, the study runner (notebooks, ablation arms, folds), the ablation table, the CLI.

The top of the house: it imports every other subpackage; none imports it.
"""
