"""Where one training step spends its time: ``torch.profiler`` self time per op, phase and kind of op."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import torch

from liverlib.bench.timing import sync_device


def _op_category(name: str) -> str:
    """Coarse class of an aten op for the profile breakdown."""
    n = name.lower()
    rules = (("convolution", ("conv",)), ("normalisation", ("norm",)),
             ("attention softmax/dropout", ("softmax", "dropout", "bernoulli", "scaled_dot_product")),
             ("matmul (linear, attention products)", ("::mm", "bmm", "addmm", "matmul", "linear")),
             ("pooling/upsampling", ("pool", "upsample", "interpolate")))  # fmt: skip
    return next((cat for cat, keys in rules if any(k in n for k in keys)), "other (elementwise, copies, loss)")


def _phase(event: Any) -> str:
    """forward, backward or optimizer (AdamW step, zero_grad, grad clip) from an event's ancestors."""
    names = []
    while event is not None:
        names.append(event.name)
        event = event.cpu_parent
    if any(n.startswith("Optimizer.") or n.startswith("aten::_foreach") for n in names):
        return "optimizer"
    return "backward" if any(n.startswith("autograd::engine") for n in names) else "forward"


def profile_step(step: Callable[[], Any], device: torch.device, top: int = 8) -> dict[str, Any]:
    """Profile one call of ``step`` (already warm): the top (op, phase) pairs by self time, and self time
    per phase and per kind of op (optimizer ops count as the optimizer, whatever their kind)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        step()
        sync_device(device)
    cuda = device.type == "cuda"
    rows = []
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CPU or e.name.startswith(
            ("autograd::", "Optimizer.", "ProfilerStep")
        ):
            continue
        t = e.self_device_time_total if cuda else e.self_cpu_time_total
        rows.append(
            {
                "op": e.name,
                "phase": _phase(e),
                "self_us": t,
                "total_us": e.device_time_total if cuda else e.cpu_time_total,
            }
        )
    ev = pd.DataFrame(rows)
    total = float(ev.self_us.sum()) or 1.0
    clock = "device" if cuda else "CPU"
    g = ev.groupby(["op", "phase"], as_index=False).agg(calls=("self_us", "size"), self_us=("self_us", "sum"),
                                                        total_us=("total_us", "sum"))  # fmt: skip
    g = g.sort_values("self_us", ascending=False, ignore_index=True).head(top)
    ops = pd.DataFrame({"op": g.op, "phase": g.phase, "calls": g.calls, f"self {clock} ms": g.self_us / 1e3,
                        f"self {clock} %": 100 * g.self_us / total, f"{clock} total ms (incl. children)": g.total_us / 1e3})  # fmt: skip
    ev["kind"] = [("optimizer (AdamW, zero_grad, grad clip)" if ph == "optimizer" else _op_category(op))
                  for op, ph in zip(ev.op, ev.phase)]  # fmt: skip
    share = lambda col: (100 * ev.groupby(col).self_us.sum() / total).sort_values(ascending=False)  # noqa: E731
    return {"ops": ops, "kinds": share("kind"), "phases": share("phase"), "total_ms": total / 1e3,
            "op_names": set(ev.op), "clock": clock}  # fmt: skip
