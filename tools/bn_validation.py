"""Does validation track training? One training run, scored every epoch four ways (issue 17, docs/training.md).

Trains the run's model on its cache (the run folder must have run notebooks 01-02) and, after every epoch, scores
the model on an exact copy of its **own training slices** (no augmentation) and on the validation split:

- ``running``: ``eval()`` with the BatchNorm running statistics that training left (what liverlib did before);
- ``recomputed``: ``eval()`` after :func:`liverlib.training.validation.recompute_bn_stats` on the training slices (the fix);
- ``batch``: BatchNorm with batch statistics, dropout off (what the weights can do; copy only).

Training itself is identical in all four (a BatchNorm in training mode never reads its running statistics).
Not a test: a measurement, written as CSV and printed.

    .venv/bin/python tools/bn_validation.py OUTPUT_ROOT RUN_NAME [--epochs N] [--lr X] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from liverlib.data.dataset import SliceDataset, open_run_cache, split_index
from liverlib.data.preprocess import PreprocessConfig
from liverlib.files import read_json
from liverlib.model.hybrid import build_model
from liverlib.params import resolve
from liverlib.run import RunDir
from liverlib.runtime import amp_settings, epoch_seed, seed_everything
from liverlib.training.loop import LoaderConfig, make_loader, make_optimizer
from liverlib.training.losses import CombinedLoss
from liverlib.training.schedule import make_scheduler
from liverlib.training.step import train_step
from liverlib.training.validation import BatchStatistics, recompute_bn_stats, validate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output_root")
    ap.add_argument("run_name")
    ap.add_argument("--epochs", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--csv", default="")
    args = ap.parse_args()
    rec = read_json(Path(args.output_root) / args.run_name / "params.json")["parameters"]
    extra = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    p = resolve(**{**rec, **extra, "output_root": args.output_root, "run_name": args.run_name, "profiles": []})
    epochs = args.epochs or p.epochs
    run = RunDir.from_params(p)
    cache = open_run_cache(run.root, PreprocessConfig.from_params(p))
    train_idx, val_idx = split_index(run.manifest, "train"), split_index(run.manifest, "val")
    device = torch.device("cpu")
    torch.set_num_threads(torch.get_num_threads())
    use_amp, dtype, _ = amp_settings(device, p.amp, cpu_bf16=p.cpu_bf16)
    dtype = dtype if use_amp else None
    seed_everything(p.seed)
    model = build_model(p.model, image_size=p.image_size, encoder=p.encoder, encoder_weights=None,
                        fused_attention=p.fused_attention).to(memory_format=torch.channels_last)  # fmt: skip
    opt = make_optimizer(model, p.lr, p.weight_decay, device)
    sched = make_scheduler(opt, p, epochs=epochs, steps_per_epoch=-(-len(train_idx) // p.batch_size))
    import liverlib.training.augment as aug

    tf = aug.build_augmentation(elastic_alpha=p.elastic_alpha, elastic_sigma=p.elastic_sigma, seed=p.seed)
    train_ds = SliceDataset(train_idx, cache, tf if p.augment else None)
    copy_ds, val_ds = SliceDataset(train_idx, cache, None), SliceDataset(val_idx, cache, None)
    loss_fn = CombinedLoss(p.ce_weight, p.dice_weight, p.focal_weight, p.focal_alpha, p.focal_gamma, p.dice_eps)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    rows = []
    kw = {"channels_last": True, "autocast": dtype is not None, "dtype": dtype}
    for epoch in range(1, epochs + 1):
        seed_everything(epoch_seed(p.seed, epoch))
        tf.set_random_seed(epoch_seed(p.seed, epoch))
        model.train()
        t0, total, n = time.perf_counter(), 0.0, 0
        for x, y in make_loader(train_ds, LoaderConfig.from_params(p), shuffle=True, epoch=epoch, device=device):
            loss = train_step(model, x, y, opt, loss_fn, scaler, grad_clip=p.grad_clip, amp_dtype=dtype,
                              channels_last=True, scheduler=sched.batch)  # fmt: skip
            total, n = total + float(loss) * len(x), n + len(x)
        row = {"epoch": epoch, "train_loss": total / n, "lr": opt.param_groups[0]["lr"],
               "train_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
        copy_loader = make_loader(copy_ds, LoaderConfig.from_params(p), shuffle=False, epoch=epoch, device=device)
        val_loader = make_loader(val_ds, LoaderConfig.from_params(p), shuffle=False, epoch=epoch, device=device)
        batch = BatchStatistics(model)
        for name, m in (("running", model), ("batch", batch)):
            r = validate(m, copy_loader, loss_fn, device, **kw)
            row[f"copy_{name}_liver"], row[f"copy_{name}_tumor_gtpos"] = r["val_liver_dice"], r["val_tumor_dice_gtpos"]
        row["val_running_liver"] = validate(model, val_loader, loss_fn, device, **kw)["val_liver_dice"]
        precise = copy.deepcopy(model)
        recompute_bn_stats(
            precise,
            make_loader(copy_ds, LoaderConfig.from_params(p), shuffle=True, epoch=epoch, device=device),
            device,
            **kw,
        )
        r = validate(precise, copy_loader, loss_fn, device, **kw)
        row["copy_recomputed_liver"], row["copy_recomputed_tumor_gtpos"] = (
            r["val_liver_dice"],
            r["val_tumor_dice_gtpos"],
        )
        r = validate(precise, val_loader, loss_fn, device, **kw)
        row["val_recomputed_liver"], row["val_recomputed_loss"] = r["val_liver_dice"], r["val_loss"]
        sched.epoch(r["val_loss"])
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    df = pd.DataFrame(rows)
    if args.csv:
        df.to_csv(args.csv, index=False)
    print(df.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
