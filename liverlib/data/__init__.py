"""Data: LiTS NIfTI and DICOM input, the owned phantom, curation, preprocessing and its cache, the slice dataset.

Imports only the ground floor (params, labels, progress, files, errors); never the run folder, a model or training.
"""
