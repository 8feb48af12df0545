"""``segment``: a user's CT (NIfTI or DICOM) in, a label NIfTI and a report out; inputs and outputs checked first.

Imports data, model, evaluation inference and the ground floor; never training.
"""
