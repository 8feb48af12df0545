"""The model: the paper's hybrid CNN-Transformer (and the smp baseline), checkpoints (save, safe load, rebuild).

Imports the ground floor only; data, training and evaluation import it.
"""
