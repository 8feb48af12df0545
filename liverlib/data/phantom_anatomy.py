"""The anatomy of the embedded phantom: one synthetic abdominal CT case (:func:`make_case`), docs/study.md §1.

See :mod:`liverlib.data.phantom` for what a case holds; this module builds it, tissue by tissue (body, bowel,
solid organs, great vessels, spine, ribs, liver vessels, tumors), and :mod:`liverlib.data.phantom` writes the
cases to a folder it owns.
"""

from __future__ import annotations

import itertools

import numpy as np
from nibabel import orientations as nio
from scipy import ndimage

from liverlib.data.geometry import DISPLAY_AXCODES
from liverlib.labels import LABELS

PHANTOM_VERSION = 1
MIN_SIZE, MIN_SLICES = 32, 16
"""Smallest slice size and slice count a phantom case can be built with."""
ORIENTATIONS: tuple[tuple[str, str, str], ...] = (("R", "A", "S"), ("L", "P", "S"), ("L", "A", "S"))
"""File voxel orders, used in turn by case id (id mod 3)."""
OUTCOMES: tuple[str, ...] = ("eligible", "no_tumor", "few_tumor_slices", "shape_mismatch")
"""Intended curation outcome of a case; the last three are the rejections of docs/study.md §1 rules 1–3."""
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


def file_array(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """:func:`liverlib.data.geometry.from_display` in Fortran order: the layout NIfTI stores, ~10× faster to copy and write."""
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
