"""Command line: ``python -m liverlib {study,pool,train,segment,phantom,bench} ...``.

Exit codes: 0 done; 2 a usage mistake (bad arguments or parameters, an input that cannot be used, an
output that exists or cannot be written) — nothing was changed; 1 a failure while running (a refused or
failed stage, a bad checkpoint, a failed write); 130 interrupted (Ctrl-C: rerun the same command to resume); 143
terminated (SIGTERM, what ``kill`` and a scheduler send: handled like Ctrl-C, same message, same resumable state).
Every error is one line, ``liverlib <command>: error: <what, naming the file>``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import Any

from liverlib.errors import CaseError, RunError
from liverlib.params import ParamError


def _overrides(pairs: list[str] | None) -> dict[str, object]:
    """``KEY=VALUE`` pairs with YAML values (``epochs=10``, ``hu_window=[-200,250]``), in order.

    Raises:
        ParamError: a pair without ``=`` or without a key, a value that is not YAML, or one key given
            twice with different values (the earlier one would be silently dropped). An empty or null
            value is kept as null, so the parameter check names it ("needs a value").
    """
    import yaml

    out: dict[str, object] = {}
    for kv in pairs or []:
        key, eq, val = kv.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ParamError(f"--set {kv!r}: expected KEY=VALUE (e.g. epochs=10)")
        try:
            value = yaml.safe_load(val) if val.strip() else None
        except yaml.YAMLError as exc:
            raise ParamError(f"--set {kv!r}: the value is not valid YAML ({str(exc).splitlines()[0]})") from exc
        if key in out and out[key] != value:
            raise ParamError(f"--set {key} given twice ({out[key]!r} and {value!r}); give it once")
        out[key] = value
    return out


def _study(a: argparse.Namespace) -> None:
    from liverlib.pipeline.study import run_study

    overrides = _overrides(a.set)
    if a.data_dir is not None:
        overrides["data_dir"] = a.data_dir
    if a.run_name is not None:
        if not a.run_name.strip():
            raise ParamError("--run-name '': give a folder name (or leave --run-name out for the profile's)")
        overrides["run_name"] = a.run_name
    if a.arm is not None:
        if a.start or a.only:
            raise ParamError(f"--arm {a.arm}: runs notebooks 02-04 of the arm (finished ones are reused); leave out --start/--only")  # fmt: skip
        from liverlib.pipeline.study import run_arm

        run_arm(a.f, a.arm, overrides=overrides, fold=a.fold)
    elif a.fold is not None:
        from liverlib.pipeline.study import run_fold

        run_fold(a.f, a.fold, overrides=overrides, start=a.start, only=a.only)
    else:
        run_study(a.f, overrides=overrides, start=a.start, only=a.only)


def _pool(a: argparse.Namespace) -> None:
    from liverlib.pipeline.pool import pool_run

    pool_run(a.run)


def _train(a: argparse.Namespace) -> None:
    from liverlib.params import load_profiles, resolve
    from liverlib.pipeline.stages import train_one

    p = resolve(**{**load_profiles(*a.f), **_overrides(a.set)})
    train_one(p, model_name=a.model)


def _phantom(a: argparse.Namespace) -> None:
    from liverlib.data.phantom import generate_phantom

    paths = generate_phantom(a.out, n_cases=a.cases, size=a.size, n_slices=(a.min_slices, a.max_slices), seed=a.seed,
                             compress=a.gz)  # fmt: skip
    print(f"{len(paths)} phantom cases in {a.out}")


def _segment(a: argparse.Namespace) -> None:
    from liverlib.segment.segment import segment_cli

    segment_cli(a)


def _bench(a: argparse.Namespace) -> None:
    from liverlib.bench import bench_cli

    bench_cli(a)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all subcommands."""
    ap = argparse.ArgumentParser(prog="liverlib", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    _study_parsers(sub)
    _segment_parser(sub)
    _bench_parser(sub)
    return ap


def _study_parsers(sub: Any) -> None:
    """``study``, ``pool``, ``train`` and ``phantom``."""
    s = sub.add_parser("study", help="run the numbered notebooks in order with papermill")
    s.add_argument(
        "-f", action="append", required=True, metavar="PARAMS.yaml", help="params file (repeatable, merged in order)"
    )
    s.add_argument("--data-dir", help="LiTS folder (flat or Kaggle layout); overrides data_dir")
    s.add_argument("--run-name", help="output folder name under outputs/")
    s.add_argument("--start", help="restart from this notebook number, e.g. 03")
    s.add_argument("--only", nargs="+", help="run only these notebook numbers")
    s.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="override single parameters (YAML values; repeatable)")  # fmt: skip
    s.add_argument("--fold", type=int, metavar="K",
                   help="only fold K of a cross-validated profile (folds > 0), into <run>/folds/K/; then `liverlib pool`")  # fmt: skip
    s.add_argument("--arm", metavar="NAME",
                   help="only ablation arm NAME (notebooks 02-04 into <run>/ablation/NAME/; notebook 01 first)")  # fmt: skip
    s.set_defaults(func=_study)

    pl = sub.add_parser("pool", help="pool the finished folds (and arms) of a run made in parallel (docs/scaling.md)",
                        description="Gather the finished folds of <run>/folds/ into cv_per_volume.csv, cv_summary.json "
                        "and Table 4 pooled over the folds; for a run without folds, its finished ablation arms into "
                        "Table 4. Says which are missing; refuses folds or arms made with other parameters or on "
                        "another split.")  # fmt: skip
    pl.add_argument("run", help="the run folder, e.g. outputs/full_lits")
    pl.set_defaults(func=_pool)

    t = sub.add_parser("train", help="train one model on a run's cache (notebooks 01-02 first); works under torchrun")
    t.add_argument("-f", action="append", required=True, metavar="PARAMS.yaml", help="params file (repeatable)")
    t.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="override single parameters (YAML values; repeatable)")  # fmt: skip
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


def _segment_parser(sub: Any) -> None:
    """``segment``: a checkpoint applied to users' CT."""
    seg = sub.add_parser("segment", help="segment CT volumes (NIfTI or a DICOM series) with a trained checkpoint",
                         description="Segment liver and tumor; see docs/segment.md.")  # fmt: skip
    seg.add_argument("--checkpoint", required=True)
    seg.add_argument("--input", required=True, help="a .nii/.nii.gz volume, a folder of them, or a DICOM series folder")
    seg.add_argument("--output", required=True, help="output mask file, or a folder when --input is a NIfTI folder")
    seg.add_argument("--series", metavar="UID", help="the DICOM series to read from a folder holding several")
    seg.add_argument("--resample-dicom", action="store_true",
                     help="resample an unevenly spaced DICOM series (missing slice, change of spacing) onto an even "
                     "grid instead of refusing it; the output says so")  # fmt: skip
    seg.add_argument("--device", default="auto")
    seg.add_argument("--batch-size", type=int, default=16)
    seg.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                     help="auto: bf16 on a CPU with native bf16, else fp32; --amp decides on CUDA; bf16: autocast in bfloat16 (default: auto)")  # fmt: skip
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


def _bench_parser(sub: Any) -> None:
    """``bench``: the benchmark."""
    b = sub.add_parser("bench", help="benchmark training, inference and the data path; writes docs/benchmarks.md")
    b.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    b.add_argument("--batch-size", type=int, default=8)
    b.add_argument("--device", default="auto")
    b.add_argument("--quick", action="store_true", help="fewer repetitions")
    b.add_argument("--out", default="docs/benchmarks.md")
    b.add_argument("--groups", nargs="+", choices=["model", "data", "volume"], default=["model", "data", "volume"],
                   help="what to measure: model steps, the data path, volume inference (default: all)")  # fmt: skip
    b.add_argument("--big-batch", type=int, default=None,
                   help="also time the fast path at this batch (default 32 on CUDA, none on CPU; 0: none)")  # fmt: skip
    b.add_argument("--compile", action="store_true",
                   help="also time the model step under torch.compile (path 'fast, compiled'; minutes of compiling)")  # fmt: skip
    b.add_argument("--cpu-bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast on CPU (default: where the CPU supports it natively)")  # fmt: skip
    b.set_defaults(func=_bench)


USAGE_ERRORS = (ParamError, CaseError, FileExistsError, FileNotFoundError)
"""Exit 2: the command was given something it cannot use; nothing was changed."""

FAILURES = (RunError, OSError)
"""Exit 1: a stage refused or failed while running (e.g. an earlier run with other parameters, an unwritable target)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread where Ctrl-C raises KeyboardInterrupt, so every handler of an interrupt
    (training's last complete epoch, the study runner's partial notebook) runs for it too."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    """The SIGTERM handler of :func:`main`: note the signal and interrupt the main thread."""
    global _terminated
    _terminated = True
    raise Terminated


_terminated = False
"""Set by :func:`_terminate`; a handler may re-raise the interrupt as its own KeyboardInterrupt, so the exit code (143,
not 130) is told from this flag, not from the exception's type."""


def main(argv: list[str] | None = None) -> int:
    """Entry point; errors print one clear line (exit codes in the module docstring)."""
    global _terminated
    args = build_parser().parse_args(argv)
    _terminated = False
    main_thread = threading.current_thread() is threading.main_thread()  # only there can a handler be set
    before = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        args.func(args)
    except KeyboardInterrupt as exc:
        what = str(exc) or "interrupted; rerun the same command to resume"
        print(f"liverlib {args.cmd}: {what}", file=sys.stderr)
        return 143 if _terminated else 130
    except USAGE_ERRORS as exc:
        print(f"liverlib {args.cmd}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except FAILURES as exc:
        print(f"liverlib {args.cmd}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    finally:
        if main_thread and before is not None:  # None: a handler not set from Python, left as it was
            signal.signal(signal.SIGTERM, before)
    return 0


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line; an OSError names its file (``[Errno 13] Permission denied: 'x'``)."""
    text = str(exc) if not isinstance(exc, OSError) or not exc.filename else f"{exc.filename}: {exc.strerror}"
    return " ".join(text.split()) or type(exc).__name__
