"""PCD reading and writing, checked against files written by hand from the format description."""

from __future__ import annotations

import struct
from pathlib import Path

import lzf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from scenarios.pcd import PCDFormatError, quantize_intensity, read_pcd, write_pcd

OPENCDA_HEADER = """# .PCD v0.7 - Point Cloud Data file format
VERSION 0.7
FIELDS x y z rgb
SIZE 4 4 4 4
TYPE F F F F
COUNT 1 1 1 1
WIDTH {n}
HEIGHT 1
VIEWPOINT 0 0 0 1 0 0 0
POINTS {n}
DATA {data}
"""

XYZI_HEADER = OPENCDA_HEADER.replace("rgb", "intensity")


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode("ascii") if isinstance(text, str) else text)
    return path


def test_ascii_opencda_packed_rgb(tmp_path: Path) -> None:
    # rgb bits 0xC20000 print as 1.78160863e-38 (R = 194); 0x400000 is a denormal (R = 64).
    body = "1.5 -2.25 0.125 1.78160863e-38\n10 20 -1.75 5.87747175e-39\n-3 0 0 0\n"
    path = _write(tmp_path / "a.pcd", OPENCDA_HEADER.format(n=3, data="ascii") + body)
    points = read_pcd(path)
    assert points.dtype == np.float32 and points.shape == (3, 4)
    np.testing.assert_array_equal(points[:, :3], [[1.5, -2.25, 0.125], [10, 20, -1.75], [-3, 0, 0]])
    assert points[0, 3] == pytest.approx(194 / 255, abs=1e-7)
    assert points[1, 3] == pytest.approx(64 / 255, abs=1e-7)
    assert points[2, 3] == 0.0


def test_ascii_intensity_field_with_comments_and_extra_field(tmp_path: Path) -> None:
    text = (
        "# written by hand\nVERSION .7\nFIELDS x y z intensity ring\nSIZE 4 4 4 4 2\n"
        "TYPE F F F F U\nCOUNT 1 1 1 1 1\nWIDTH 2\nHEIGHT 1\nPOINTS 2\nDATA ascii\n"
        "1 2 3 0.5 7\n-4 5.5 6 12 31\n"
    )
    points = read_pcd(_write(tmp_path / "b.pcd", text))
    np.testing.assert_array_equal(points, [[1, 2, 3, 0.5], [-4, 5.5, 6, 12]])


def test_binary_by_hand(tmp_path: Path) -> None:
    records = struct.pack("<4f", 1.0, 2.0, 3.0, 0.25) + struct.pack("<4f", -1.0, 0.5, 8.0, 1.0)
    path = _write(tmp_path / "c.pcd", XYZI_HEADER.format(n=2, data="binary").encode() + records)
    np.testing.assert_array_equal(read_pcd(path), [[1, 2, 3, 0.25], [-1, 0.5, 8, 1]])


def test_binary_with_uint32_rgb_and_padding_field(tmp_path: Path) -> None:
    header = (
        "VERSION 0.7\nFIELDS x y z _ rgb\nSIZE 4 4 4 1 4\nTYPE F F F U U\nCOUNT 1 1 1 4 1\n"
        "WIDTH 1\nHEIGHT 1\nPOINTS 1\nDATA binary\n"
    )
    record = struct.pack("<3f4BI", 4.0, 5.0, 6.0, 0, 0, 0, 0, 0xFF0000)
    points = read_pcd(_write(tmp_path / "d.pcd", header.encode() + record))
    np.testing.assert_array_equal(points, [[4, 5, 6, 1.0]])


def test_binary_compressed_by_hand(tmp_path: Path) -> None:
    # Column-major: all x, then all y, z, intensity; LZF-compressed after two uint32 sizes.
    columns = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [0.1, 0.2, 0.3]], dtype="<f4")
    plain = columns.tobytes()
    packed = lzf.compress(plain, len(plain) + 64)
    body = struct.pack("<II", len(packed), len(plain)) + packed
    path = _write(tmp_path / "e.pcd", XYZI_HEADER.format(n=3, data="binary_compressed").encode())
    path.write_bytes(path.read_bytes() + body)
    np.testing.assert_array_equal(read_pcd(path), columns.T)


def test_writer_reproduces_opencda_ascii(tmp_path: Path) -> None:
    path = tmp_path / "w.pcd"
    write_pcd(path, np.array([[1.5, -2.25, 0.125, 194 / 255], [0, 0, 0, 0]], np.float32))
    text = path.read_text()
    assert text == OPENCDA_HEADER.format(n=2, data="ascii") + (
        "1.5 -2.25 0.125 1.78160863e-38\n0 0 0 0\n"
    )


def test_writer_clips_and_quantizes_intensity(tmp_path: Path) -> None:
    path = tmp_path / "q.pcd"
    write_pcd(path, np.array([[0, 0, 0, 0.5], [0, 0, 0, 1.7], [0, 0, 0, -0.2]], np.float32))
    np.testing.assert_array_equal(read_pcd(path)[:, 3], np.float32([128, 255, 0]) / 255)
    expected = np.float32([128, 255, 0]) / np.float32(255)
    np.testing.assert_array_equal(quantize_intensity([0.5, 1.7, -0.2]), expected)


def test_empty_cloud_round_trips(tmp_path: Path) -> None:
    for encoding in ("ascii", "binary", "binary_compressed"):
        write_pcd(tmp_path / "z.pcd", np.zeros((0, 4), np.float32), encoding)
        assert read_pcd(tmp_path / "z.pcd").shape == (0, 4)


finite = st.floats(-1e4, 1e4, width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None)
@given(
    xyz=arrays(np.float32, st.tuples(st.integers(0, 30), st.just(3)), elements=finite),
    data=st.data(),
    encoding=st.sampled_from(["ascii", "binary", "binary_compressed"]),
    field=st.sampled_from(["rgb", "intensity"]),
)
def test_round_trip_property(
    tmp_path_factory: pytest.TempPathFactory, xyz, data, encoding, field
) -> None:
    n = len(xyz)
    if field == "rgb":  # the red byte holds k / 255 exactly
        intensity = quantize_intensity(
            data.draw(arrays(np.int64, n, elements=st.integers(0, 255))) / 255.0
        )
    else:
        intensity = data.draw(arrays(np.float32, n, elements=finite))
    points = np.column_stack([xyz, intensity]).astype(np.float32)
    path = tmp_path_factory.mktemp("pcd") / "p.pcd"
    write_pcd(path, points, encoding, field)
    np.testing.assert_array_equal(read_pcd(path), points)


GOOD = OPENCDA_HEADER.format(n=2, data="ascii")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("hello world\n", "no DATA line"),
        (GOOD.replace("FIELDS x y z rgb\n", ""), "no FIELDS line"),
        (GOOD.replace("SIZE 4 4 4 4", "SIZE 4 4 4"), "4 FIELDS but 3 SIZE"),
        (GOOD.replace("TYPE F F F F", "TYPE F F F Q"), "unsupported TYPE Q"),
        (GOOD.replace("FIELDS x y z", "FIELDS a y z"), "no x field"),
        (GOOD.replace("POINTS 2", "POINTS 3"), "disagrees with WIDTH"),
        (GOOD.replace("POINTS 2", "POINTS two"), "non-integer POINTS"),
        (GOOD.replace("DATA ascii", "DATA binary_lz4"), "unsupported DATA"),
        (GOOD + "1 2 3 0\n", "ascii body has 4 values; header says 2 points"),
        (GOOD + "1 2 3 0\n4 5 6 0\n7\n", "ascii body has 9 values"),
        (GOOD + "1 2 3 0\n4 five 6 0\n", "non-numeric value"),
        (XYZI_HEADER.format(n=2, data="binary") + "x" * 20, "binary body truncated: 20 bytes"),
        (XYZI_HEADER.format(n=2, data="binary_compressed") + "abc", "no size words"),
    ],
)
def test_malformed_files_raise_naming_file(tmp_path: Path, content: str, problem: str) -> None:
    path = _write(tmp_path / "bad.pcd", content)
    with pytest.raises(PCDFormatError, match=problem) as info:
        read_pcd(path)
    assert str(path) in str(info.value)


def test_malformed_compressed_bodies(tmp_path: Path) -> None:
    header = XYZI_HEADER.format(n=1, data="binary_compressed").encode()
    cases = [
        (struct.pack("<II", 5, 12), "uncompressed size 12, header implies 16"),
        (struct.pack("<II", 50, 16) + b"\x00" * 10, "truncated: 10 bytes, need 50"),
        (struct.pack("<II", 3, 16) + b"\xff\xff\xff", "not valid LZF"),
        (struct.pack("<II", 1, 16) + b"\x00", "not valid LZF"),
    ]
    for body, problem in cases:
        path = _write(tmp_path / "bad.pcd", header + body)
        with pytest.raises(PCDFormatError, match=problem):
            read_pcd(path)
    with pytest.raises(PCDFormatError, match="cannot read PCD"):
        read_pcd(tmp_path / "missing.pcd")
