"""PCD point-cloud files: read ASCII, binary and binary_compressed; write OpenCDA-style ASCII.

OPV2V's LiDAR sweeps are PCD v0.7 files written by OpenCDA through Open3D: ``FIELDS x y z rgb``,
``DATA ascii``, with the intensity packed into the red byte of the ``rgb`` float's bit pattern
(``0x00RRGGBB``, intensity = R / 255). Other tools write an ``intensity`` field and binary or
LZF-compressed data; :func:`read_pcd` accepts all of these and always returns float32 ``(N, 4)``
x, y, z, intensity in the sensor frame. The header and the ascii/binary bodies are parsed here
with numpy so that every malformed file gets an error naming the file and the problem; only LZF
decompression (``binary_compressed``) uses a library, ``python-neo-lzf`` (module ``lzf``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

Encoding = Literal["ascii", "binary", "binary_compressed"]
IntensityField = Literal["rgb", "intensity"]

_TYPE_CODES = {"F": "f", "I": "i", "U": "u"}
_MAX_HEADER_LINES = 64


class PCDFormatError(ValueError):
    """A PCD file that cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class PCDHeader:
    """The parsed header of a PCD file; ``data_offset`` is where the body starts (bytes)."""

    fields: tuple[str, ...]
    sizes: tuple[int, ...]
    types: tuple[str, ...]
    counts: tuple[int, ...]
    points: int
    data: str
    data_offset: int

    def dtype(self) -> np.dtype:
        """Little-endian structured dtype of one point record (fields in file order)."""
        parts = []
        for i, (name, size, kind, count) in enumerate(
            zip(self.fields, self.sizes, self.types, self.counts, strict=True)
        ):
            # PCL pads with fields named "_"; structured dtypes need unique names.
            unique = name if self.fields.index(name) == i else f"{name}__{i}"
            base = np.dtype(f"<{_TYPE_CODES[kind]}{size}")
            parts.append((unique, base, (count,)) if count > 1 else (unique, base))
        return np.dtype(parts)


def _fail(path: Path | str, problem: str) -> PCDFormatError:
    return PCDFormatError(f"{path}: {problem}")


def parse_header(raw: bytes, path: Path | str = "<bytes>") -> PCDHeader:
    """Parse the text header at the start of ``raw`` up to and including the ``DATA`` line."""
    values: dict[str, list[str]] = {}
    offset = 0
    for _ in range(_MAX_HEADER_LINES):
        if offset >= len(raw):
            break
        end = raw.find(b"\n", offset)
        end = len(raw) if end < 0 else end
        line = raw[offset:end].decode("ascii", errors="replace").strip()
        offset = end + 1
        if line and not line.startswith("#"):
            key, *rest = line.split()
            values[key.upper()] = rest
            if key.upper() == "DATA":
                break
    if "DATA" not in values:
        raise _fail(
            path, f"not a PCD file: no DATA line in the first {_MAX_HEADER_LINES} header lines"
        )
    for key in ("FIELDS", "SIZE", "TYPE"):
        if key not in values:
            raise _fail(path, f"PCD header has no {key} line")
    fields = tuple(values["FIELDS"])
    n = len(fields)
    try:
        sizes = tuple(int(v) for v in values["SIZE"])
        counts = tuple(int(v) for v in values.get("COUNT", ["1"] * n))
    except ValueError as exc:
        raise _fail(path, f"non-integer SIZE or COUNT in PCD header ({exc})") from None
    types = tuple(v.upper() for v in values["TYPE"])
    if not (len(sizes) == len(types) == len(counts) == n) or n == 0:
        raise _fail(
            path,
            f"PCD header lists {n} FIELDS but {len(sizes)} SIZE, {len(types)} TYPE and "
            f"{len(counts)} COUNT values",
        )
    for name, size, kind in zip(fields, sizes, types, strict=True):
        if kind not in _TYPE_CODES or size not in ((4, 8) if kind == "F" else (1, 2, 4, 8)):
            raise _fail(path, f"field {name!r} has unsupported TYPE {kind} SIZE {size}")
    if any(c < 1 for c in counts):
        raise _fail(path, f"COUNT values must be positive, got {counts}")
    missing = [axis for axis in ("x", "y", "z") if axis not in fields]
    if missing:
        raise _fail(path, f"PCD has no {'/'.join(missing)} field (FIELDS {' '.join(fields)})")
    points = _header_points(values, path)
    data = values["DATA"][0].lower() if values["DATA"] else ""
    if data not in ("ascii", "binary", "binary_compressed"):
        raise _fail(path, f"unsupported DATA {data!r}; expected ascii, binary or binary_compressed")
    return PCDHeader(fields, sizes, types, counts, points, data, min(offset, len(raw)))


def _header_points(values: dict[str, list[str]], path: Path | str) -> int:
    """POINTS, falling back to WIDTH * HEIGHT; both must agree when both are given."""
    try:
        if "WIDTH" in values:
            width_height = int(values["WIDTH"][0]) * int(values.get("HEIGHT", ["1"])[0])
        else:
            width_height = None
        points = int(values["POINTS"][0]) if "POINTS" in values else width_height
    except (ValueError, IndexError):
        raise _fail(path, "non-integer POINTS, WIDTH or HEIGHT in PCD header") from None
    if points is None:
        raise _fail(path, "PCD header has neither POINTS nor WIDTH")
    if points < 0 or (width_height is not None and width_height != points):
        raise _fail(path, f"POINTS {points} disagrees with WIDTH x HEIGHT {width_height}")
    return points


def _decode_body(raw: bytes, header: PCDHeader, path: Path | str) -> np.ndarray:
    """The point records as a structured array of ``header.dtype()``."""
    dtype = header.dtype()
    body = memoryview(raw)[header.data_offset :]
    n = header.points
    if header.data == "ascii":
        tokens = bytes(body).split()
        per_point = sum(header.counts)
        if len(tokens) != n * per_point:
            raise _fail(
                path,
                f"ascii body has {len(tokens)} values; header says {n} points x {per_point} "
                f"values = {n * per_point}",
            )
        try:
            table = np.array(tokens, dtype=np.float64).reshape(n, per_point)
        except ValueError as exc:
            raise _fail(path, f"non-numeric value in ascii body ({exc})") from None
        records = np.zeros(n, dtype=dtype)
        column = 0
        for name, count in zip(dtype.names or (), header.counts, strict=True):
            values = table[:, column : column + count]
            records[name] = values[:, 0] if count == 1 else values
            column += count
        return records
    if header.data == "binary":
        need = n * dtype.itemsize
        if len(body) < need:
            raise _fail(path, f"binary body truncated: {len(body)} bytes, need {need}")
        if len(body) != need:
            held = len(body) / dtype.itemsize
            raise _fail(
                path,
                f"binary body holds {len(body)} bytes ({held:.6g} points); "
                f"header says {n} points x {dtype.itemsize} bytes = {need}",
            )
        return np.frombuffer(body[:need], dtype=dtype).copy()
    return _decode_compressed(body, header, dtype, path)


def _decode_compressed(
    body: memoryview, header: PCDHeader, dtype: np.dtype, path: Path | str
) -> np.ndarray:
    """binary_compressed: two uint32 sizes, then LZF data holding one column per field."""
    import lzf  # python-neo-lzf; imported here so ascii/binary need no compiled extension

    if len(body) < 8:
        raise _fail(path, "binary_compressed body truncated: no size words")
    compressed_size, raw_size = (int(v) for v in np.frombuffer(body[:8], dtype="<u4"))
    need = header.points * dtype.itemsize
    if raw_size != need:
        raise _fail(path, f"binary_compressed uncompressed size {raw_size}, header implies {need}")
    if len(body) - 8 < compressed_size:
        raise _fail(
            path,
            f"binary_compressed body truncated: {len(body) - 8} bytes, need {compressed_size}",
        )
    if need == 0:
        return np.zeros(0, dtype=dtype)
    try:
        plain = lzf.decompress(bytes(body[8 : 8 + compressed_size]), raw_size)
    except ValueError:
        plain = None
    if plain is None or len(plain) != raw_size:
        raise _fail(path, "binary_compressed body is not valid LZF data")
    records = np.zeros(header.points, dtype=dtype)
    start = 0
    for name in dtype.names or ():
        field = dtype.fields[name][0]  # type: ignore[index]
        stop = start + header.points * field.itemsize
        column = np.frombuffer(plain[start:stop], dtype=field.base)
        records[name] = column.reshape((header.points, *field.shape))
        start = stop
    return records


def _intensity(records: np.ndarray, header: PCDHeader) -> NDArray[np.float32]:
    """Intensity from an ``intensity`` field, else the R byte of a packed ``rgb``/``rgba``."""
    names = dict(zip(header.fields, records.dtype.names or (), strict=True))
    if "intensity" in names:
        return _first(records[names["intensity"]]).astype(np.float32)
    for key in ("rgb", "rgba"):
        if key in names:
            packed = np.ascontiguousarray(_first(records[names[key]]))
            bits = (
                packed.astype(np.float32).view(np.uint32)
                if packed.dtype.kind == "f"
                else packed.astype(np.uint32)
            )
            red = ((bits >> np.uint32(16)) & np.uint32(0xFF)).astype(np.float32)
            return red / np.float32(255.0)
    return np.zeros(len(records), dtype=np.float32)


def _first(column: np.ndarray) -> np.ndarray:
    return column[:, 0] if column.ndim > 1 else column


def read_pcd(path: str | Path) -> NDArray[np.float32]:
    """Read a PCD file into float32 ``(N, 4)`` x, y, z, intensity (sensor frame).

    Intensity comes from an ``intensity`` field as stored, else from the red byte of a packed
    ``rgb`` float (OpenCDA/Open3D) as R / 255, else zeros. Raises :class:`PCDFormatError`, also
    for a body longer or shorter than the header says and for any NaN/inf value.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _fail(path, f"cannot read PCD file ({exc.strerror})") from None
    header = parse_header(raw, path)
    records = _decode_body(raw, header, path)
    names = dict(zip(header.fields, records.dtype.names or (), strict=True))
    out = np.empty((header.points, 4), dtype=np.float32)
    for column, axis in enumerate(("x", "y", "z")):
        out[:, column] = _first(records[names[axis]])
    out[:, 3] = _intensity(records, header)
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise _fail(
            path,
            f"{len(bad)} point(s) with NaN/inf x, y, z or intensity "
            f"(first at point {int(bad[0])}); every point must be finite",
        )
    return out


def pack_intensity_rgb(intensity: ArrayLike) -> NDArray[np.float32]:
    """Intensity in [0, 1] -> float32 whose bits are ``0x00RR0000`` with R = round(255 * i).

    Values outside [0, 1] are clipped: the red byte cannot hold them.
    """
    i = np.clip(np.asarray(intensity, dtype=np.float64), 0.0, 1.0)
    red = np.rint(i * 255.0).astype(np.uint32)
    return (red << np.uint32(16)).view(np.float32)


def quantize_intensity(intensity: ArrayLike) -> NDArray[np.float32]:
    """What an intensity becomes after a write/read through the ``rgb`` red byte: R / 255."""
    red = (pack_intensity_rgb(intensity).view(np.uint32) >> np.uint32(16)).astype(np.float32)
    return red / np.float32(255.0)


def write_pcd(
    path: str | Path,
    points: ArrayLike,
    encoding: Encoding = "ascii",
    intensity_field: IntensityField = "rgb",
) -> None:
    """Write ``(N, 4)`` x, y, z, intensity points as a PCD v0.7 file.

    The default reproduces OpenCDA's files: ``FIELDS x y z rgb``, ``DATA ascii``, intensity in
    the red byte (quantized to R / 255, see :func:`quantize_intensity`). ``intensity_field=
    "intensity"`` stores the float32 intensity exactly; ``encoding`` picks ``binary`` or
    ``binary_compressed`` (LZF) bodies. ASCII values are printed with 9 significant digits, so
    every float32 (and every packed rgb bit pattern) reads back bit-exactly.
    """
    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != 4:
        raise ValueError(f"{path}: points must be (N, 4) x,y,z,intensity, got shape {pts.shape}")
    table = pts.copy()
    if intensity_field == "rgb":
        table[:, 3] = pack_intensity_rgb(pts[:, 3])
    elif intensity_field != "intensity":
        raise ValueError(f"intensity_field must be 'rgb' or 'intensity', got {intensity_field!r}")
    n = len(table)
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\n"
        "VERSION 0.7\n"
        f"FIELDS x y z {intensity_field}\n"
        "SIZE 4 4 4 4\n"
        "TYPE F F F F\n"
        "COUNT 1 1 1 1\n"
        f"WIDTH {n}\n"
        "HEIGHT 1\n"
        "VIEWPOINT 0 0 0 1 0 0 0\n"
        f"POINTS {n}\n"
        f"DATA {encoding}\n"
    )
    little = table.astype("<f4")
    if encoding == "ascii":
        lines = "".join(f"{a:.9g} {b:.9g} {c:.9g} {d:.9g}\n" for a, b, c, d in table.tolist())
        body = lines.encode("ascii")
    elif encoding == "binary":
        body = little.tobytes()
    elif encoding == "binary_compressed":
        body = _compress_columns(little)
    else:
        raise ValueError(f"encoding must be ascii, binary or binary_compressed, got {encoding!r}")
    Path(path).write_bytes(header.encode("ascii") + body)


def _compress_columns(table: NDArray[np.float32]) -> bytes:
    """binary_compressed body: sizes, then LZF of the column-major (field by field) data."""
    import lzf

    plain = np.ascontiguousarray(table.T).tobytes()
    if not plain:
        return np.array([0, 0], dtype="<u4").tobytes()
    # LZF may expand incompressible data slightly; allow room so it never gives up.
    packed = lzf.compress(plain, len(plain) + len(plain) // 16 + 64)
    return np.array([len(packed), len(plain)], dtype="<u4").tobytes() + packed
