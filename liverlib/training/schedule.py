"""The learning-rate schedules (docs/training.md): the paper's ReduceLROnPlateau on validation loss, or a warm-up
and cosine decay stepped per batch (``lr_schedule: onecycle``).
"""

from __future__ import annotations

from typing import Any

import torch

from liverlib.params import Params


class LrSchedule:
    """The learning-rate schedule (docs/training.md): ``plateau`` (the paper's ReduceLROnPlateau on validation loss,
    ×``plateau_factor`` after ``plateau_patience`` epochs without improvement, stepped once per epoch) or ``onecycle``
    (:class:`torch.optim.lr_scheduler.OneCycleLR`: a linear warm-up over ``warmup_epochs`` from lr/25 to ``lr``,
    then a cosine decay to ``lr``/2.5e5 by the last epoch, stepped after every batch).

    One object for both, so the loop calls :meth:`batch` after each optimiser step and :meth:`epoch` after each
    validation whatever the schedule; its state goes into ``last.pt``.
    """

    def __init__(self, opt: torch.optim.Optimizer, kind: str, *, lr: float, warmup_epochs: int, plateau_factor: float,
                 plateau_patience: int, epochs: int, steps_per_epoch: int):  # fmt: skip
        self.kind = kind
        if self.kind == "onecycle":
            total = max(1, epochs * steps_per_epoch)
            self.sched: Any = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=lr, total_steps=total, pct_start=min(0.99, max(1, warmup_epochs) / max(1, epochs)),
                anneal_strategy="cos", cycle_momentum=False, div_factor=25.0, final_div_factor=1.0e4)  # fmt: skip
        else:
            self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=plateau_factor,
                                                                    patience=plateau_patience)  # fmt: skip

    def batch(self) -> None:
        """After an optimiser step (``onecycle`` only; stops at its last step, so extra batches keep the final lr)."""
        if self.kind == "onecycle" and self.sched.last_epoch + 1 < self.sched.total_steps:
            self.sched.step()

    def epoch(self, val_loss: float) -> None:
        """After validation (``plateau`` only)."""
        if self.kind == "plateau":
            self.sched.step(val_loss)

    def state_dict(self) -> dict[str, Any]:
        return self.sched.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        total = getattr(self.sched, "total_steps", None)
        self.sched.load_state_dict(state)
        if total is not None:  # more epochs than the run first asked for: the decay ends at the new last step
            self.sched.total_steps = max(total, self.sched.total_steps)


def make_scheduler(opt: torch.optim.Optimizer, p: Params, *, epochs: int, steps_per_epoch: int) -> LrSchedule:
    """The run's :class:`LrSchedule` for ``epochs`` of ``steps_per_epoch`` optimiser steps (the five parameters it
    reads taken here, so the schedule itself never sees the whole ``Params``)."""
    return LrSchedule(opt, p.lr_schedule, lr=p.lr, warmup_epochs=p.warmup_epochs, plateau_factor=p.plateau_factor,
                      plateau_patience=p.plateau_patience, epochs=epochs, steps_per_epoch=steps_per_epoch)  # fmt: skip
