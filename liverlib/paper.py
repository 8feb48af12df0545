"""The paper's reported numbers (docs/study.md §8–9), shown beside reproduced ones. Nothing here is measured."""

from __future__ import annotations

TABLE5 = {  # epoch: (train loss, val loss, val acc, liver Dice, tumor Dice)
    1: (1.4869, 1.5667, 0.9099, 0.3148, 0.0000),
    10: (0.5042, 0.5745, 0.9584, 0.7386, 0.0685),
    20: (0.4045, 0.4072, 0.9798, 0.8508, 0.5011),
    30: (0.3706, 0.3771, 0.9810, 0.8602, 0.6041),
    40: (0.3466, 0.3399, 0.9856, 0.8956, 0.6871),
    50: (0.3363, 0.3286, 0.9871, 0.9035, 0.6928),
    60: (0.3295, 0.3215, 0.9878, 0.9044, 0.7092),
    70: (0.3090, 0.2969, 0.9902, 0.9222, 0.7625),
    80: (0.3057, 0.2900, 0.9907, 0.9273, 0.7724),
    90: (0.2950, 0.2840, 0.9914, 0.9315, 0.7856),
    98: (0.2931, 0.2766, 0.9924, 0.9382, 0.8226),
    100: (0.2877, 0.2782, 0.9923, 0.9375, 0.8117),
}
BEST_EPOCH = 98

TEST = {  # Table 6 (mean ± std over 170 test slices; IoU derived from Dice by Eq. 16)
    "liver_dice": (0.9157, 0.1223), "tumor_dice": (0.8103, 0.3037),
    "liver_iou": (0.8447, 0.0978), "tumor_iou": (0.6809, 0.2430),
    "liver_precision": (0.92, 0.08), "tumor_precision": (0.78, 0.18),
    "liver_recall": (0.91, 0.09), "tumor_recall": (0.82, 0.20),
    "liver_f1": (0.915, 0.085), "tumor_f1": (0.800, 0.19),
    "pixel_accuracy": (0.9920, None),
}  # fmt: skip
VAL_BEST = {"liver_dice": 0.9382, "tumor_dice": 0.8226, "liver_iou": 0.8844, "tumor_iou": 0.6920,
            "pixel_accuracy": 0.9924, "val_loss": 0.2766}  # fmt: skip
TEST_MEAN = {"dice": 0.8630, "iou": 0.7628, "precision": 0.8500, "recall": 0.8650, "f1": 0.8575}
"""Table 6's "Mean" column: (liver + tumor) / 2 of each metric (pixel accuracy has none)."""
TABLE7 = {  # Table 7: (validation best, test, difference = test − validation) as printed
    "liver_dice": (0.9382, 0.9157, -0.0225), "tumor_dice": (0.8226, 0.8103, -0.0123),
    "liver_iou": (0.8844, 0.8447, -0.0397), "tumor_iou": (0.6920, 0.6809, -0.0111),
    "average_dice": (0.8804, 0.8630, -0.0174),
}  # fmt: skip
PARAMETERS = 20.3e6
"""The paper's parameter count ("20.3M", abstract and §II.D)."""
CI95 = {"liver_dice": (0.897, 0.934), "tumor_dice": (0.765, 0.856)}
TTEST = {"t": 4.36, "p": "< 0.001"}
ABLATION = {"no_enhancement": (0.887, 0.746), "paper": (0.916, 0.810)}  # Table 4: (liver, tumor) Dice
ABLATION_IMPROVEMENT = (3.3, 8.6)
"""Table 4's "Improvement" row, (liver, tumor) in %: relative, (ours − baseline) / baseline (0.029/0.887 = 3.3%)."""
LITERATURE = [  # Table 8 as printed: reference, year, method, dataset, liver Dice %, tumor Dice %, note
    ("Sabir et al. [13]", 2022, "ResU-Net", "3D-IRCADb01", None, 83.00, ""),
    ("Özcan et al. [10]", 2023, "AIM-UNet", "LiTS", 97.86, 75.60, ""),
    ("Shao et al. [12]", 2024, "AC-Net", "CT", 90.00, 80.00, ""),
    ("Liao et al. [37]", 2024, "MA-cGAN", "LiTS", 96.20, 78.50, ""),
    ("Wang et al. [16]", 2025, "HyborNet", "LiTS", 92.50, 55.50, ""),
    ("Proposed Method", 2025, "Hybrid CNN–Transformer", "LiTS", 91.57, 81.03,
     "± 12.23 / ± 30.37; per slice over 170 test slices of 11 volumes (the paper's header says 2026)"),
]  # fmt: skip
TABLE8_LEVEL = {"Hybrid CNN–Transformer": "per slice (mean over 170 test slices)"}
"""The level at which a Table 8 row was scored, where the paper says (its own row, §III.D); the others: not stated."""
SETTINGS = {"epochs": 100, "image_size": 256, "batch_size": 8, "lr": 1e-4, "best_epoch": BEST_EPOCH}
"""The paper's training settings (§III.A, docs/study.md §6)."""
LOSS = {"ce_weight": 1.0, "dice_weight": 1.0, "focal_weight": 0.5, "dice_eps": 1e-6, "focal_alpha": 0.25,
        "focal_gamma": 2.0}  # fmt: skip
"""The paper's loss settings (Table 2, Eq. 10; docs/study.md §5)."""
TEST_SLICES = 170
"""Test slices the paper's means and "±" (standard deviation over slices) are over (Table 6)."""
TRAINING = {"hardware": "1× Tesla T4 (16 GB), PyTorch 2.0", "hours_100_epochs": 4.02, "train_slices": 1350}
SPLITS = {"train": (8, 1350), "val": (1, 168), "test": (2, 170)}
"""Table 3: volumes and slices per split (11 volumes, 1,688 slices in all)."""
