"""Training: the loop, validation, losses, augmentation (albumentations and torch), the device-resident batch
feeder, and optional MLflow tracking.

Imports data, model, evaluation metrics and the ground floor; nothing that scores a test split imports it.
"""
