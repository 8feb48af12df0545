"""Command line: ``python -m liverlib {study,segment,phantom,bench} ...``."""

from __future__ import annotations

import argparse
import sys

from liverlib.io import CaseError
from liverlib.params import ParamError
from liverlib.run import RunError


def _overrides(pairs: list[str] | None) -> dict[str, object]:
    """``KEY=VALUE`` pairs with YAML values (``epochs=10``, ``hu_window=[-200,250]``)."""
    import yaml

    out = {}
    for kv in pairs or []:
        key, _, val = kv.partition("=")
        out[key] = yaml.safe_load(val)
    return out


def _study(a: argparse.Namespace) -> None:
    from liverlib.study import run_study

    overrides = _overrides(a.set)
    if a.data_dir is not None:
        overrides["data_dir"] = a.data_dir
    if a.run_name:
        overrides["run_name"] = a.run_name
    run_study(a.f, overrides=overrides, start=a.start, only=a.only)


def _train(a: argparse.Namespace) -> None:
    from liverlib.params import load_profiles, resolve
    from liverlib.training import train

    p = resolve(**{**load_profiles(*a.f), **_overrides(a.set)})
    train(p, model_name=a.model)


def _phantom(a: argparse.Namespace) -> None:
    from liverlib.phantom import generate_phantom

    paths = generate_phantom(a.out, n_cases=a.cases, size=a.size, n_slices=(a.min_slices, a.max_slices), seed=a.seed,
                             compress=a.gz)  # fmt: skip
    print(f"{len(paths)} phantom cases in {a.out}")


def _segment(a: argparse.Namespace) -> None:
    from liverlib.segment import segment_cli

    segment_cli(a)


def _bench(a: argparse.Namespace) -> None:
    from liverlib.bench import bench_cli

    bench_cli(a)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all subcommands."""
    ap = argparse.ArgumentParser(prog="liverlib", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("study", help="run the numbered notebooks in order with papermill")
    s.add_argument(
        "-f", action="append", required=True, metavar="PARAMS.yaml", help="params file (repeatable, merged in order)"
    )
    s.add_argument("--data-dir", help="LiTS folder (flat or Kaggle layout); overrides data_dir")
    s.add_argument("--run-name", help="output folder name under outputs/")
    s.add_argument("--start", help="restart from this notebook number, e.g. 03")
    s.add_argument("--only", nargs="+", help="run only these notebook numbers")
    s.add_argument("--set", nargs="+", metavar="KEY=VALUE", help="override single parameters (YAML values)")
    s.set_defaults(func=_study)

    t = sub.add_parser("train", help="train one model on a run's cache (notebooks 01-02 first); works under torchrun")
    t.add_argument("-f", action="append", required=True, metavar="PARAMS.yaml", help="params file (repeatable)")
    t.add_argument("--set", nargs="+", metavar="KEY=VALUE", help="override single parameters (YAML values)")
    t.add_argument("--model", help="hybrid or unet_smp (default: the params' model)")
    t.set_defaults(func=_train)

    g = sub.add_parser("phantom", help="write the embedded synthetic LiTS-like cases as NIfTI")
    g.add_argument("--out", required=True)
    g.add_argument("--cases", type=int, default=14)
    g.add_argument("--size", type=int, default=512)
    g.add_argument("--min-slices", type=int, default=60)
    g.add_argument("--max-slices", type=int, default=120)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--gz", action="store_true", help="write .nii.gz")
    g.set_defaults(func=_phantom)

    seg = sub.add_parser("segment", help="segment CT volumes (NIfTI or a DICOM series) with a trained checkpoint",
                         description="Segment liver and tumor; see docs/segment.md.")  # fmt: skip
    seg.add_argument("--checkpoint", required=True)
    seg.add_argument("--input", required=True, help="a .nii/.nii.gz volume, a folder of them, or a DICOM series folder")
    seg.add_argument("--output", required=True, help="output mask file, or a folder when --input is a NIfTI folder")
    seg.add_argument("--series", metavar="UID", help="the DICOM series to read from a folder holding several")
    seg.add_argument("--device", default="auto")
    seg.add_argument("--batch-size", type=int, default=16)
    seg.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                     help="auto: fp32 on CPU, --amp decides on CUDA; bf16: autocast in bfloat16 (default: auto)")  # fmt: skip
    seg.add_argument("--tta", action="store_true", help="average over flipped slices (4x slower; default off)")
    seg.add_argument("--save-probabilities", metavar="PATH.npz",
                     help="float16 background/liver/tumor probabilities on the input grid (a folder in folder mode)")  # fmt: skip
    seg.add_argument("--report", metavar="OUT.json", help="versions, device, checkpoint, timings, volumes, mean HU")
    seg.add_argument("--no-postprocess", action="store_true",
                     help="write the raw prediction (default: keep the largest liver component, tumor inside it)")  # fmt: skip
    seg.add_argument(
        "--liver-lcc", action="store_true", help=argparse.SUPPRESS
    )  # the default now; kept for old scripts
    seg.add_argument("--overwrite", action="store_true")
    seg.add_argument("--skip-existing", action="store_true", help="skip inputs whose mask exists (folder mode)")
    seg.add_argument(
        "--amp", action="store_true", help="mixed precision on CUDA under --precision auto (ignored on CPU)"
    )
    seg.set_defaults(func=_segment)

    b = sub.add_parser("bench", help="benchmark training, inference and the data path; writes docs/benchmarks.md")
    b.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    b.add_argument("--batch-size", type=int, default=8)
    b.add_argument("--device", default="auto")
    b.add_argument("--quick", action="store_true", help="fewer repetitions")
    b.add_argument("--out", default="docs/benchmarks.md")
    b.add_argument("--groups", nargs="+", choices=["model", "data", "volume"], default=["model", "data", "volume"],
                   help="what to measure: model steps, the data path, volume inference (default: all)")  # fmt: skip
    b.set_defaults(func=_bench)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one clear line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ParamError, CaseError, RunError, FileNotFoundError, FileExistsError) as exc:
        print(f"liverlib {args.cmd}: error: {exc}", file=sys.stderr)
        return 2
    return 0
