"""The paper's artefacts: table builders, figures, report.md, and the tables the notebooks show.

Imports evaluation statistics, the model's layer table and the ground floor.
"""
