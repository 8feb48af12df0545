"""Class labels of LiTS (docs/study.md §1): one mapping used everywhere instead of bare numbers."""

from __future__ import annotations

LABELS: dict[str, int] = {"background": 0, "liver": 1, "tumor": 2}
"""Label values in LiTS segmentation files and in every mask liverlib writes."""

CLASS_NAMES: tuple[str, ...] = tuple(sorted(LABELS, key=LABELS.get))
"""Class names ordered by label value: ``("background", "liver", "tumor")``."""

FOREGROUND: tuple[str, ...] = ("liver", "tumor")
"""Classes that metrics report on."""

NUM_CLASSES: int = len(LABELS)
