"""Embedded synthetic LiTS-like CT data: phantoms that need no download (STUDY §1).

Each case is an abdominal CT phantom built in the display convention of :mod:`liverlib.io` (slices
inferior → superior, rows anterior → posterior, columns patient's right → left): body outline with
subcutaneous fat, muscle wall and a cavity with visceral fat, spine and ribs, a contrast-enhanced liver
(label 1) on the image's left, organs of liver-like intensity (spleen, kidneys, aorta, IVC), stomach and
bowel holding air or fluid, and hypodense tumors (label 2) inside the liver, then a mild in-plane blur
and Gaussian noise. In-plane sizes are in mm and the field of view scales with 512/size, so a 128-px
set looks like a downscaled 512 set; along z, organs span fixed fractions of the scan. Case N is stored
in voxel order RAS, LPS or LAS (N mod 3), so loading exercises the reorientation. With 4 or more
cases the last three are built to fail curation (STUDY §1 rules 1–3): no tumor, tumor on 3 slices,
and a mask that lacks the last slice.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
from nibabel import orientations as nio
from scipy import ndimage
from tqdm.auto import tqdm

from liverlib.io import DISPLAY_AXCODES, atomic_write, remove_stale_temps, save_nifti
from liverlib.labels import LABELS
from liverlib.params import ParamError

PHANTOM_VERSION = 1
MIN_SIZE, MIN_SLICES = 32, 16
"""Smallest slice size and slice count a phantom case can be built with."""
ORIENTATIONS: tuple[tuple[str, str, str], ...] = (("R", "A", "S"), ("L", "P", "S"), ("L", "A", "S"))
"""File voxel orders, used in turn by case id (id mod 3)."""
OUTCOMES: tuple[str, ...] = ("eligible", "no_tumor", "few_tumor_slices", "shape_mismatch")
"""Intended curation outcome of a case; the last three are the rejections of STUDY §1 rules 1–3."""
BURDENS: tuple[str, ...] = ("small", "medium", "large")
"""Tumor size strata of eligible cases (main tumor radius 4–9, 9–18, 22–40 mm)."""

# fmt: off
_HU = {  # tissue class → HU range drawn per case; air, fat, muscle, cavity must be 0–3 (nested body shells)
    "air": (-1000, -1000), "fat": (-110, -90), "muscle": (40, 55), "cavity": (30, 45), "table": (150, 150),
    "bowel_wall": (45, 60), "gas": (-950, -800), "fluid": (5, 25), "stomach": (20, 40), "liver": (90, 130),
    "liver_vessel": (150, 190), "kidney": (120, 150), "kidney_medulla": (60, 90), "spleen": (100, 110),
    "vessel": (140, 190), "bone": (350, 450), "cortex": (800, 1000), "canal": (10, 20), "disc": (70, 90),
}
# fmt: on
_T = {name: i for i, name in enumerate(_HU)}
# tissue, inner tissue (q ≤ 0.6), centre (x, y) and radii (x, y) in body semi-axes, z span in liver spans, skew, wobble
_ORGANS = (
    ("stomach", "gas", (0.3, -0.35), (0.3, 0.28), (0.35, 0.9), 1.0, 0.1),
    ("liver", None, (-0.42, -0.2), (0.47, 0.62), (0.0, 1.0), 1.36, 0.12),
    ("liver", None, (-0.02, -0.45), (0.3, 0.26), (0.45, 1.0), 1.0, 0.1),  # left lobe
    ("kidney", "kidney_medulla", (-0.42, 0.4), (0.16, 0.25), (-0.3, 0.45), 1.0, 0.0),
    ("kidney", "kidney_medulla", (0.42, 0.4), (0.16, 0.25), (-0.3, 0.45), 1.0, 0.0),
    ("spleen", None, (0.62, 0.25), (0.2, 0.33), (0.4, 1.05), 1.0, 0.08),
)
_PROBE = np.array(list(itertools.product((-1, 0, 1), repeat=3)), float)
_PROBE *= 0.8 / np.maximum(np.linalg.norm(_PROBE, axis=1, keepdims=True), 1)  # centre + 26 directions at 0.8 r


def _profile(u: np.ndarray, lo: float, hi: float, skew: float = 1.0) -> np.ndarray:
    """Cross-section scale in [0, 1] along z: 0 outside [lo, hi], a dome inside (peak at 0.5**(1/skew))."""
    t = np.clip((u - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.sqrt(np.sin(np.pi * t**skew))


def _ellipse(Y: np.ndarray, X: np.ndarray, cy, cx, ry, rx) -> np.ndarray:
    """Boolean ellipse; centres and radii may be (Z, 1, 1) columns, giving a (Z, Y, X) result."""
    return ((Y - cy) / ry) ** 2 + ((X - cx) / rx) ** 2 <= 1


def _wave_basis(rng: np.random.Generator, X2: np.ndarray, Y2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8 random plane waves (3–8 cm) for a smooth field: z wavenumbers (8,), in-plane [cos; -sin] (16, Y·X)."""
    w = rng.normal(size=(8, 3))
    w *= (2 * np.pi / rng.uniform(30, 80, 8) / np.linalg.norm(w, axis=1))[:, None]
    a = w[:, 0, None, None] * X2 + w[:, 1, None, None] * Y2 + rng.uniform(0, 2 * np.pi, 8)[:, None, None]
    return w[:, 2], np.concatenate([np.cos(a), -np.sin(a)]).reshape(16, -1).astype(np.float32)


def _smooth_field(kz: np.ndarray, basis: np.ndarray, zmm: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Sum of the plane waves on slices at ``zmm`` (≈ unit variance), float32 (Z, Y, X): cos(a + b) as a matmul."""
    b = kz[:, None] * zmm
    return (np.concatenate([np.cos(b), np.sin(b)]).T.astype(np.float32) / 2 @ basis).reshape(len(zmm), *shape)


def _tumor_specs(rng: np.random.Generator, outcome: str, burden: str) -> list[tuple[float, float]]:
    """(radius mm, z rule) per tumor: rule ≥ 0 is a minimum z semi-axis in slices, < 0 a fixed one."""
    if outcome == "no_tumor":
        return []
    if outcome == "few_tumor_slices":
        return [(rng.uniform(8, 14), -1.6)]  # |dz| <= 1: exactly 3 slices
    lo, hi = {"small": (4, 9), "medium": (9, 18), "large": (22, 40)}[burden]
    specs = [(rng.uniform(lo, hi), 2.6)]  # main tumor covers |dz| <= 2: at least 5 slices
    specs += [(rng.uniform(*((lo, hi) if burden != "large" else (6, 15))), 0.0) for _ in range(rng.integers(0, 3))]
    return specs + [(rng.uniform(2.5, 5), 0.0) for _ in range(rng.integers(0, 3) if rng.random() < 0.5 else 0)]


def _add_tumors(rng, tissue, liver, specs, t, s) -> tuple[np.ndarray, np.ndarray]:
    """Place soft ellipsoids mostly inside the liver; returns (tumor bool, HU drop float32), both (Z, Y, X)."""
    tumor, drop = np.zeros_like(liver), np.zeros(liver.shape, np.float32)
    core = liver.copy()  # liver voxels with liver 2 slices above and below
    for sh in (1, 2):
        core[sh:] &= liver[:-sh]
        core[:-sh] &= liver[sh:]
        core[:sh] = core[-sh:] = False
    cand = np.flatnonzero(core)
    if specs and cand.size == 0:
        raise RuntimeError("liver too thin along z to hold a tumor on 5 slices; use more slices")
    base = rng.uniform(38, 62)
    for r_mm, z_rule in specs:
        rz = max(r_mm * rng.uniform(0.8, 1.2) / t, z_rule) if z_rule >= 0 else -z_rule
        ry, rx = r_mm * rng.uniform(0.8, 1.2, 2) / s
        centres = np.stack(np.unravel_index(cand[rng.integers(cand.size, size=16)], liver.shape), 1)
        probe = np.rint(centres[:, None] + _PROBE * (rz, ry, rx)).astype(int).clip(0, np.array(liver.shape) - 1)
        c = centres[np.argmax(liver[tuple(probe.T)].sum(0))]  # of 16 candidates, the one most inside the liver
        box = tuple(
            slice(max(ci - h, 0), min(ci + h + 1, m))
            for ci, h, m in zip(c, (int(np.ceil(1.1 * r)) for r in (rz, ry, rx)), liver.shape, strict=True)
        )
        gz, gy, gx = np.ogrid[box]
        d = np.sqrt(((gz - c[0]) / rz) ** 2 + ((gy - c[1]) / ry) ** 2 + ((gx - c[2]) / rx) ** 2).astype(np.float32)
        dt = (base + rng.uniform(-5, 5)) * (1 + rng.uniform(0, 0.3) * np.clip(1 - d, 0, 1))  # darker centre
        drop[box] = np.maximum(drop[box], dt * np.clip((1.1 - d) / 0.3, 0, 1))  # soft edge: 1 at d ≤ 0.8, 0 at 1.1
        tumor[box] |= d < 1
        sub = tissue[box]
        sub[(d < 1.1) & (sub == _T["liver_vessel"])] = _T["liver"]  # tumors displace vessels
    return tumor, drop


def _file_array(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """:func:`liverlib.io.from_display` in Fortran order: the layout NIfTI stores, ~10× faster to copy and write."""
    ornt = nio.ornt_transform(nio.axcodes2ornt(DISPLAY_AXCODES), nio.io_orientation(affine))
    return np.asfortranarray(nio.apply_orientation(data.transpose(2, 1, 0), ornt))


def phantom_affine(
    codes: tuple[str, str, str], spacing: tuple[float, float, float], shape: tuple[int, int, int]
) -> np.ndarray:
    """A 4×4 axis-aligned affine, centred on the volume, whose voxel axes have the given codes.

    Args:
        codes: nibabel axis codes of the file's voxel axes (i, j, k), e.g. ``("L", "P", "S")``.
        spacing: voxel size in mm along the display axes (slice, row, col).
        shape: display shape (slices, rows, cols).
    """
    by_world = {0: (spacing[2], shape[2]), 1: (spacing[1], shape[1]), 2: (spacing[0], shape[0])}  # x, y, z
    aff = np.diag([0.0, 0.0, 0.0, 1.0])
    for i, c in enumerate(codes):
        w, sign = "RLAPSI".index(c) // 2, 1.0 if c in "RAS" else -1.0
        sp, n = by_world[w]
        aff[w, i], aff[w, 3] = sign * sp, -sign * sp * (n - 1) / 2
    return aff


class _Canvas:
    """One case under construction: its voxel grid in mm, per-case tissue HU and the tissue class volume.

    In-plane coordinates are mm from the body centre (``X`` → patient's left, ``Y`` → posterior); ``u`` runs
    0 (inferior) → 1 (superior) over the slices, ``zmm`` is the slice position in mm.
    """

    def __init__(self, rng: np.random.Generator, size: int, n: int) -> None:
        self.rng, self.size, self.n = rng, size, n
        self.s = round(float(rng.uniform(0.6, 0.9) * 512 / size), 4)  # in-plane spacing, mm
        self.t = round(float(np.clip(rng.uniform(180, 260) / n, 1.0, 5.0)), 3)  # slice thickness, mm
        self.hu = np.array([rng.uniform(lo, hi) for lo, hi in _HU.values()], np.float32)
        self.half = size * self.s / 2
        self.ax, yb = rng.uniform(0.80, 0.90) * self.half, rng.uniform(-0.04, 0.05) * self.half  # half-width, row
        self.ay = self.ax * rng.uniform(0.68, 0.78)
        self.x = ((np.arange(size) - (size - 1) / 2) * self.s).astype(np.float32)
        self.X, self.Y = self.x[None, None, :], (self.x - yb)[None, :, None]
        self.X2, self.Y2 = self.X[0], self.Y[0]
        self.u, self.zmm = (np.arange(n) + 0.5) / n, np.arange(n) * self.t
        self.slabs = [slice(k, k + 8) for k in range(0, n, 8)]
        self.tissue = np.empty((n, size, size), np.uint8)
        self.cavity = np.empty((n, size, size), bool)
        self.fat = self.wall = 0.0  # body shell thicknesses, mm (set by _body)

    def organ(self, c, r, lo, hi, skew=1.0, wobble=0.0, jitter=0.04) -> tuple[tuple[slice, ...], np.ndarray]:
        """(box, q): normalised radius q (≤ 1 inside) in a (z, y, x) box; z size 1 for organs through the scan."""
        rng, ax, ay, u, n, x = self.rng, self.ax, self.ay, self.u, self.n, self.x
        cx, cy = (c[0] + rng.uniform(-jitter, jitter)) * ax, (c[1] + rng.uniform(-jitter, jitter)) * ay
        rx, ry = r[0] * ax * rng.uniform(0.9, 1.1), r[1] * ay * rng.uniform(0.9, 1.1)
        flat = hi - lo >= 1
        p = np.ones(1) if flat else _profile(u, lo, hi, skew)
        ks = np.flatnonzero(p > 0.05)
        k0, k1 = (int(ks[0]), int(ks[-1]) + 1) if ks.size else (0, 0)
        ys, xs = (
            slice(*np.searchsorted(v, [m - 1.5 * rm, m + 1.5 * rm]))
            for v, m, rm in ((self.Y2[:, 0], cy, ry), (x, cx, rx))
        )
        box, Yb, Xb, p = (slice(0, n) if flat else slice(k0, k1), ys, xs), self.Y2[ys], self.X2[:, xs], p[k0:k1]
        dist = np.sqrt(((Yb - cy) / ry) ** 2 + ((Xb - cx) / rx) ** 2)
        if not wobble:
            return box, dist[None] / _col(p)
        theta = np.arctan2((Yb - cy) / ry, (Xb - cx) / rx)  # radius × (1 + Σ_k a_k(z) cos(kθ + φ_k)) as a matmul
        basis, coef = [np.ones_like(dist)], [p]
        for k in (2, 3, 4):
            amp = wobble / (k - 1) * (1 + 0.5 * np.sin(rng.uniform(2, 6) * u[k0:k1] + rng.uniform(0, 6.3)))
            coef.append(p * amp)
            basis.append(np.cos(k * theta + rng.uniform(0, 2 * np.pi)))
        scale = np.stack(coef, 1).astype(np.float32) @ np.stack(basis).reshape(len(basis), -1)
        return box, dist[None] / scale.reshape(-1, *dist.shape)

    def paint(self, box, region, name, where=None) -> None:
        """Set tissue ``name`` in ``region`` of ``box`` (only where ``where`` is true, if given)."""
        region = np.broadcast_to(region, self.tissue[box].shape)
        self.tissue[box][region if where is None else region & where[box]] = _T[name]


def _col(v) -> np.ndarray:
    """Values per slice as a float32 (Z, 1, 1) column."""
    return np.asarray(v, np.float32)[:, None, None]


def _body(cv: _Canvas) -> None:
    """Nested shells (air 0, fat 1, muscle 2, cavity 3), slowly varying along z; a CT table below."""
    rng, u, X, Y = cv.rng, cv.u, cv.X, cv.Y
    ph = rng.uniform(0, 2 * np.pi, 2)
    bx, by = cv.ax * (1 + 0.04 * np.sin(5 * u + ph[0])), cv.ay * (1 + 0.04 * np.sin(4 * u + ph[1]))
    cv.fat, cv.wall = fat, wall = rng.uniform(8, 25), rng.uniform(8, 14)
    tissue, cavity = cv.tissue, cv.cavity
    for z in cv.slabs:  # slabs of 8 slices: small temporaries are reused by the allocator, large ones page-fault
        cavity[z] = _ellipse(Y, X, 0, 0, _col(by[z] - fat - wall), _col(bx[z] - fat - wall))
        tissue[z] = _ellipse(Y, X, 0, 0, _col(by[z]), _col(bx[z])).view(np.uint8) + cavity[z].view(np.uint8)
        tissue[z] += _ellipse(Y, X, 0, 0, _col(by[z] - fat), _col(bx[z] - fat)).view(np.uint8)
    top = by.max() + 8
    tissue[:, (cv.Y2 > top) & (cv.Y2 < top + 6) & (np.abs(cv.X2) < 0.95 * cv.half)] = _T["table"]


def _bowel(cv: _Canvas, u0: float, span: float) -> None:
    """3–6 bowel loops (wall, then gas or fluid) in the cavity, below and around the lower liver."""
    rng = cv.rng
    for _ in range(rng.integers(3, 7)):
        a = rng.uniform(0.0, u0 + 0.2 * span)
        c = (rng.uniform(-0.3, 0.5), rng.uniform(-0.5, 0.1))
        box, q = cv.organ(c, (0.1, 0.13), a, a + rng.uniform(0.15, 0.35), jitter=0)
        cv.paint(box, q <= 1, "bowel_wall", cv.cavity)
        cv.paint(box, q <= 0.7, "gas" if rng.random() < 0.5 else "fluid", cv.cavity)


def _solid_organs(cv: _Canvas, u0: float, span: float) -> None:
    """The organs of :data:`_ORGANS` (stomach, liver and its left lobe, kidneys, spleen) in the cavity."""
    for name, inner, c, r, (a, b), skew, wobble in _ORGANS:
        box, q = cv.organ(c, r, max(u0 + a * span, 0), min(u0 + b * span, 0.98), skew, wobble)
        cv.paint(box, q <= 1, name, cv.cavity)
        if inner:
            cv.paint(box, q <= 0.6, inner, cv.cavity)


def _great_vessels(cv: _Canvas) -> None:
    """Aorta and IVC through the whole scan."""
    for c, r in (((0.1, 0.25), (0.07, 0.1)), ((-0.12, 0.2), (0.08, 0.08))):
        box, q = cv.organ(c, r, 0, 1, jitter=0.01)
        cv.paint(box, q <= 1, "vessel")


def _spine(cv: _Canvas) -> None:
    """Vertebral body (cortical rim; a disc every ~32 mm) and posterior arch around the canal."""
    tissue, Y2, X2 = cv.tissue, cv.Y2, cv.X2
    rv, cyv = 0.14 * cv.ax, 0.5 * cv.ay
    vb, vb_in = _ellipse(Y2, X2, cyv, 0, 0.9 * rv, rv), _ellipse(Y2, X2, cyv, 0, 0.9 * rv - 2.5, rv - 2.5)
    tissue[:, _ellipse(Y2, X2, cyv + 1.4 * rv, 0, 0.75 * rv, 0.9 * rv)] = _T["cortex"]
    tissue[:, _ellipse(Y2, X2, cyv + 1.3 * rv, 0, 0.4 * rv, 0.4 * rv)] = _T["canal"]
    tissue[:, vb], tissue[:, vb_in] = _T["cortex"], _T["bone"]
    disc = np.flatnonzero(np.sin(2 * np.pi * cv.zmm / 32 + cv.rng.uniform(0, 6.3)) > 0.75)
    sub = tissue[disc]
    sub[:, vb] = _T["disc"]
    tissue[disc] = sub


def _ribs(cv: _Canvas, u0: float, span: float) -> None:
    """Ribs in the muscle wall of the upper abdomen, crossing the axial plane obliquely; none at the spine."""
    rng, tissue, ax, ay = cv.rng, cv.tissue, cv.ax, cv.ay
    angles = np.linspace(0, 2 * np.pi, 14, endpoint=False) + rng.uniform(-0.1, 0.1, 14)
    angles = angles[np.abs(np.angle(np.exp(1j * (angles - np.pi / 2)))) > 0.7]
    rr, period, phase = rng.uniform(5, 7) * ax / 150, rng.uniform(35, 45), rng.uniform(0, 6.3, len(angles))
    for a, ph_i in zip(angles, phase, strict=True):
        cx, cy = (ax - cv.fat - cv.wall / 2) * np.cos(a), (ay - cv.fat - cv.wall / 2) * np.sin(a)
        disk, inner = _ellipse(cv.Y2, cv.X2, cy, cx, rr, rr), _ellipse(cv.Y2, cv.X2, cy, cx, rr - 2, rr - 2)
        ks = np.flatnonzero((cv.u > u0 + 0.15 * span) & (np.sin(2 * np.pi * cv.zmm / period + ph_i) > 0.1))
        ys, xs = np.flatnonzero(disk.any(1)), np.flatnonzero(disk.any(0))
        if ys.size and ks.size:
            yx = np.s_[ys[0] : ys[-1] + 1], np.s_[xs[0] : xs[-1] + 1]
            sub = tissue[ks][:, yx[0], yx[1]]
            sub[:, disk[yx]], sub[:, inner[yx]] = _T["cortex"], _T["bone"]
            tissue[ks, yx[0], yx[1]] = sub


def _liver_vessels(cv: _Canvas) -> np.ndarray:
    """Enhancing oblique tubes inside the liver (still labelled liver); returns the liver, bool (Z, Y, X)."""
    rng, ax, ay, t = cv.rng, cv.ax, cv.ay, cv.t
    liver = cv.tissue == _T["liver"]
    lz, ly, lx = (np.flatnonzero(liver.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    lbox = np.s_[lz[0] : lz[-1] + 1, ly[0] : ly[-1] + 1, lx[0] : lx[-1] + 1]
    kk = np.arange(cv.n)[lbox[0]] - cv.n / 2
    for _ in range(4):
        c = np.array([-0.45, -0.15]) * (ax, ay) + rng.uniform(-25, 25, 2) * ax / 150
        v, vr = rng.uniform(-0.6, 0.6, 2) * t, rng.uniform(2.5, 5) * ax / 150
        tube = _ellipse(cv.Y[:, lbox[1]], cv.X[..., lbox[2]], _col(c[1] + v[1] * kk), _col(c[0] + v[0] * kk), vr, vr)
        cv.tissue[lbox][tube & liver[lbox]] = _T["liver_vessel"]
    return liver


def _render(cv: _Canvas, liver: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """int16 HU (Z, Y, X): tissue HU, visceral fat patches and ±3 HU liver texture, tumors, blur, noise."""
    rng, size, tissue, hu = cv.rng, cv.size, cv.tissue, cv.hu
    kz, basis = _wave_basis(rng, cv.X2, cv.Y2)
    sigma = np.float32(rng.uniform(10, 20))
    image = np.empty((cv.n, size, size), np.int16)
    for z in cv.slabs:
        f = _smooth_field(kz, basis, cv.zmm[z], (size, size))
        img = hu[tissue[z]]
        patches = np.clip(f - 0.5, 0, 0.8)
        patches *= (hu[_T["fat"]] - hu[_T["cavity"]]) / 0.8
        f *= 3
        f -= drop[z]
        f *= liver[z]
        np.copyto(f, patches, where=tissue[z] == _T["cavity"])
        img += f
        ndimage.gaussian_filter(img, sigma=(0, 0.7, 0.7), output=f)
        rng.standard_normal(dtype=np.float32, out=img)
        img *= sigma
        img += f
        image[z] = np.clip(np.rint(img, out=img), -1024, 3071, out=img)
    return image


def make_case(
    case_id: int,
    size: int,
    n_slices: int,
    rng: np.random.Generator,
    *,
    outcome: str = "eligible",
    burden: str = "medium",
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Build one phantom CT and its labels in the display convention, without touching disk.

    Args:
        case_id: case number (used in messages; the anatomy comes from ``rng``).
        size: rows = cols of each slice (≥ 32); in-plane spacing is U(0.6, 0.9) mm × 512 / size.
        n_slices: number of axial slices (≥ 16); slice thickness ≈ U(180, 260) mm / n_slices, clipped to [1, 5].
        rng: source of all randomness (same state → byte-identical arrays).
        outcome: one of :data:`OUTCOMES`: ``no_tumor`` has no tumor, ``few_tumor_slices`` tumor on exactly
            3 slices, ``shape_mismatch`` a mask lacking the last (most superior) slice; else ≥ 5 tumor slices.
        burden: one of :data:`BURDENS`, the tumor sizes.

    Returns:
        image: int16 HU in [-1024, 3071], shape (n_slices, size, size); liver 90–130 HU, tumors 25–60 HU darker;
        mask: uint8 labels (``LABELS``: 0 background, 1 liver, 2 tumor), same shape (one slice fewer for
        ``shape_mismatch``); tumor only inside the liver;
        spacing: voxel size in mm as (slice, row, col).
    """
    if outcome not in OUTCOMES or burden not in BURDENS:
        raise ValueError(f"outcome must be one of {OUTCOMES}, burden one of {BURDENS}; got {outcome!r}, {burden!r}")
    if size < MIN_SIZE or n_slices < MIN_SLICES:
        raise ValueError(
            f"case {case_id}: need size >= {MIN_SIZE} and n_slices >= {MIN_SLICES}, got {size}, {n_slices}"
        )
    cv = _Canvas(rng, size, int(n_slices))  # the draws below keep their order: same seed, same case
    _body(cv)
    u0, span = rng.uniform(0.15, 0.3), rng.uniform(0.42, 0.65)  # liver from u0 to u0 + span
    _bowel(cv, u0, span)
    _solid_organs(cv, u0, span)
    _great_vessels(cv)
    _spine(cv)
    _ribs(cv, u0, span)
    liver = _liver_vessels(cv)
    try:
        tumor, drop = _add_tumors(rng, cv.tissue, liver, _tumor_specs(rng, outcome, burden), cv.t, cv.s)
    except RuntimeError as exc:
        raise RuntimeError(f"case {case_id}: {exc}") from None
    image = _render(cv, liver, drop)
    mask = liver * np.uint8(LABELS["liver"])
    tumor &= liver
    mask[tumor] = LABELS["tumor"]
    return image, (mask[:-1] if outcome == "shape_mismatch" else mask), (cv.t, cv.s, cv.s)


def _plan(n_cases: int, n_slices: tuple[int, int], seed: int) -> list[dict]:
    """Per case: id, outcome, burden (balanced over eligible cases) and slice count."""
    special = list(OUTCOMES[1:]) if n_cases >= 4 else []
    n_elig = n_cases - len(special)
    burdens = [str(b) for b in np.random.default_rng(seed).permutation([BURDENS[i % 3] for i in range(n_elig)])]
    outcomes, burdens = ["eligible"] * n_elig + special, burdens + ["medium"] * len(special)
    slices = [int(np.random.default_rng([seed, i, 1]).integers(n_slices[0], n_slices[1] + 1)) for i in range(n_cases)]
    return [
        {"id": i, "outcome": outcomes[i], "tumor_burden": burdens[i], "n_slices": slices[i]} for i in range(n_cases)
    ]


def _check_values(n_cases: int, size: int, n_slices: tuple[int, int]) -> None:
    """Raise ParamError for values no phantom can be built with (before anything is written)."""
    if int(n_cases) < 1:
        raise ParamError(f"phantom: need at least 1 case, got cases = {n_cases}")
    if int(size) < MIN_SIZE:
        raise ParamError(f"phantom: slice size must be at least {MIN_SIZE} px, got size = {size}")
    if len(n_slices) != 2 or not MIN_SLICES <= int(n_slices[0]) <= int(n_slices[1]):
        raise ParamError(f"phantom: slices (min, max) must satisfy {MIN_SLICES} <= min <= max, got {tuple(n_slices)}")


def _file_record(path: Path) -> dict[str, int | str]:
    """Size and sha256 of a written file: what phantom.json records to recognise it later."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _read_meta(meta_path: Path) -> dict:
    """phantom.json as a dict; {} when absent; FileExistsError when present but not a phantom's."""
    if not meta_path.exists():
        return {}
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict) or not isinstance(meta.get("params"), dict):
        raise FileExistsError(
            f"{meta_path.parent}: holds {meta_path.name}, which is not a phantom.json liverlib phantom wrote; "
            "use an empty or new folder (phantom never replaces or deletes files it did not write)"
        )
    return meta


def _owned(meta: dict) -> dict[str, dict]:
    """Files an earlier run wrote, by name: their size/sha256 record, or {} where none was recorded."""
    owned = {c[k]: {} for c in meta.get("cases", []) for k in ("volume", "segmentation")}  # version 1: no records
    return owned | {name: dict(rec or {}) for name, rec in meta.get("files", {}).items()}


def _check_folder(out: Path, owned: dict[str, dict], same_params: bool) -> None:
    """Refuse a folder holding anything the earlier phantom did not write, or a file changed since.

    A file phantom.json records with size and sha256 may be replaced or deleted only if it still matches;
    one recorded without them (older phantom.json, or a run killed before recording it) only when the same
    parameters will write it again byte for byte.
    """
    for f in sorted(out.iterdir()):
        if f.name == "phantom.json":
            continue
        rec = owned.get(f.name) if f.is_file() else None
        if rec is None:
            raise FileExistsError(
                f"{out}: holds {f.name}, which liverlib phantom did not write (not in its phantom.json); "
                "use an empty or new folder (phantom never replaces or deletes files it did not write)"
            )
        if rec and (f.stat().st_size != rec.get("bytes") or _file_record(f) != rec):
            raise FileExistsError(
                f"{out}: {f.name} differs from the file liverlib phantom wrote there (size or sha256 in "
                "phantom.json); nothing was changed; move it away or use an empty or new folder"
            )
        if not rec and not same_params:
            raise FileExistsError(
                f"{out}: {f.name} has no checksum in phantom.json (older liverlib or an interrupted run), so it "
                "cannot be told from your own data; nothing was changed; delete the folder yourself or use a new one"
            )


def generate_phantom(
    out_dir: str | Path,
    n_cases: int = 14,
    size: int = 512,
    n_slices: tuple[int, int] = (60, 120),
    seed: int = 42,
    *,
    compress: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Write a synthetic LiTS folder: ``volume-N`` / ``segmentation-N`` NIfTI pairs and ``phantom.json``.

    Images are int16 HU, masks uint8 labels {0, 1, 2}; case N is stored in voxel order
    ``ORIENTATIONS[N % 3]`` with a matching affine, so :func:`liverlib.io.load_case` returns every case with
    the liver on the image's left. ``phantom.json`` holds ``params``, ``complete``, ``files`` (size and sha256
    of every file written) and, per case: id, outcome (see :data:`OUTCOMES`), tumor_burden, n_slices, file
    names, orientation (e.g. ``"LPS"``), spacing (slice, row, col) in mm, image and mask shape (display
    order), liver_voxels (label 1), tumor_voxels (label 2) and tumor_slices.

    Idempotent: when ``phantom.json`` holds the same parameters and every file exists with its recorded
    size, nothing is rewritten. User data is never touched: a folder holding any file phantom.json does not
    list, or a listed file changed since, is refused before anything is written; only files this function
    wrote (and that still match their record) are replaced or deleted (e.g. ``.nii`` after a switch to
    ``.nii.gz``). Files are written atomically; ``phantom.json`` is rewritten after each case, so a killed
    run is completed by the next, whose leftover temp files are removed.

    Args:
        out_dir: folder to write into (created).
        n_cases: cases 0..n_cases-1; with n_cases >= 4 the last three fail curation (STUDY §1).
        size: rows = cols per slice (512 like LiTS; 128 for a smoke run; at least :data:`MIN_SIZE`).
        n_slices: inclusive range of slice counts, drawn per case (each ≥ :data:`MIN_SLICES`).
        seed: same seed → identical arrays and byte-identical files.
        compress: write ``.nii.gz`` instead of ``.nii``.
        progress: show a progress bar.

    Returns:
        Paths of the volume files, by case id.

    Raises:
        ParamError: a value no phantom can be built with (cases < 1, size or slices too small, min > max).
        FileExistsError: ``out_dir`` is a file, or holds files this function did not write or that changed.
    """
    _check_values(n_cases, size, n_slices)
    out, ext = Path(out_dir), ".nii.gz" if compress else ".nii"
    params = {"version": PHANTOM_VERSION, "n_cases": int(n_cases), "size": int(size)}
    params |= {"n_slices": [int(n_slices[0]), int(n_slices[1])], "seed": int(seed), "compress": bool(compress)}
    meta_path = out / "phantom.json"
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder; phantom --out needs a folder")
    old = _read_meta(meta_path) if out.is_dir() else {}
    owned = _owned(old)
    present = all((out / f).is_file() and (out / f).stat().st_size == r.get("bytes", (out / f).stat().st_size)
                  for f, r in owned.items())  # fmt: skip
    if old.get("params") == params and old.get("complete", True) and owned and present:
        return [out / c["volume"] for c in old["cases"]]
    plans = _plan(n_cases, n_slices, seed)
    names = [f"{kind}-{c['id']}{ext}" for c in plans for kind in ("volume", "segmentation")]
    if out.is_dir():
        for name in {*names, *owned, meta_path.name} if old else ():
            remove_stale_temps(out, name)  # a killed run's half-written temp files (only in a phantom's folder)
        _check_folder(out, owned, old.get("params") == params)
    out.mkdir(parents=True, exist_ok=True)
    files = {name: owned.get(name, {}) for name in names} | {n: r for n, r in owned.items() if (out / n).exists()}

    def save_meta(**extra) -> None:
        with atomic_write(meta_path) as tmp:
            tmp.write_text(json.dumps({"params": params, "complete": False, "files": files} | extra, indent=1))

    save_meta()  # before the first file: whatever is written below is listed as this function's
    cases = []
    for plan in tqdm(plans, desc="phantom", disable=not progress):
        i, codes = plan["id"], ORIENTATIONS[plan["id"] % len(ORIENTATIONS)]
        rng = np.random.default_rng([seed, i])
        image, mask, spacing = make_case(
            i, size, plan["n_slices"], rng, outcome=plan["outcome"], burden=plan["tumor_burden"]
        )
        affine = phantom_affine(codes, spacing, image.shape)
        vol, seg = f"volume-{i}{ext}", f"segmentation-{i}{ext}"
        for name, data in ((vol, image), (seg, mask)):
            if files[name]:
                files[name] = {}  # being replaced: a kill after the rename must not leave the old checksum
                save_meta()
            save_nifti(_file_array(data, affine), affine, out / name)
            files[name] = _file_record(out / name)
        save_meta()
        tumor = mask == LABELS["tumor"]
        record = {"volume": vol, "segmentation": seg, "orientation": "".join(codes), "spacing": list(spacing)}
        record |= {"shape": list(image.shape), "mask_shape": list(mask.shape), "tumor_voxels": int(tumor.sum())}
        record |= {"liver_voxels": int((mask == LABELS["liver"]).sum()), "tumor_slices": int(tumor.any((1, 2)).sum())}
        cases.append(plan | record)
    for name in set(files) - set(names):
        (out / name).unlink(missing_ok=True)  # only files an earlier run wrote, checked above (e.g. .nii after .nii.gz)
        del files[name]
    save_meta(complete=True, cases=cases)
    return [out / c["volume"] for c in cases]
