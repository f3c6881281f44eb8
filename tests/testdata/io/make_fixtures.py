"""Regenerate the io test fixtures: python3 tests/testdata/io/make_fixtures.py

NumPy writes the .npy/.npz files; PNGs are assembled here with zlib and hand-applied
filters (an encoder independent of lib/io/png.ts). Pixel values follow
v(x, y, c) = (x * 37 + y * 91 + c * 53) % 256, which the tests recompute.
"""
import os, struct, zlib
import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
p = lambda name: os.path.join(here, name)

np.save(p("f4_2x3.npy"), np.arange(6, dtype="<f4").reshape(2, 3) * 0.5 - 1)
np.save(p("f8_4.npy"), np.array([1.5, -2.25, 1e-3, 12345.0], dtype="<f8"))
np.save(p("i4_2x2.npy"), np.array([[-3, 4], [2**20, -(2**20)]], dtype="<i4"))
np.save(p("i8_3.npy"), np.array([0, -7, 2**24], dtype="<i8"))
np.save(p("u1_2x2x2x3.npy"), (np.arange(24) * 11 % 256).astype("|u1").reshape(2, 2, 2, 3))
np.save(p("u4_3.npy"), np.array([0, 1, 4000000000], dtype="<u4"))
np.save(p("f4_scalar.npy"), np.float32(2.5))
np.save(p("fortran_2x3.npy"), np.asfortranarray(np.arange(6, dtype="<f4").reshape(2, 3)))
arrays = dict(
    a=np.arange(6, dtype="<f4").reshape(3, 2),
    labels=np.array([3, 1, 4], dtype="<i8"),
    arr_0=(np.arange(24) * 11 % 256).astype("|u1").reshape(2, 2, 2, 3),
)
np.savez(p("savez.npz"), **arrays)
np.savez_compressed(p("savez_compressed.npz"), **arrays)


def chunk(t, data):
    return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)


def paeth(a, b, c):
    q = a + b - c
    pa, pb, pc = abs(q - a), abs(q - b), abs(q - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def png(path, w, h, ch, ctype, rows, plte=None, trns=None):
    raw = b""
    prev = [0] * (w * ch)
    for y, row in enumerate(rows):
        f = y % 5  # every filter type in turn
        out = []
        for i, v in enumerate(row):
            a = row[i - ch] if i >= ch else 0
            b = prev[i]
            c = prev[i - ch] if i >= ch else 0
            pred = [0, a, b, (a + b) // 2, paeth(a, b, c)][f]
            out.append((v - pred) % 256)
        raw += bytes([f] + out)
        prev = row
    ihdr = struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0)
    body = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    if plte is not None:
        body += chunk(b"PLTE", plte)
    if trns is not None:
        body += chunk(b"tRNS", trns)
    z = zlib.compress(raw, 9)
    body += chunk(b"IDAT", z[: len(z) // 2]) + chunk(b"IDAT", z[len(z) // 2 :])
    body += chunk(b"IEND", b"")
    open(path, "wb").write(body)


v = lambda x, y, c: (x * 37 + y * 91 + c * 53) % 256
W, H = 7, 6
for ch, ctype, name in [(1, 0, "gray"), (2, 4, "gray_alpha"), (3, 2, "rgb"), (4, 6, "rgba")]:
    rows = [[v(x, y, c) for x in range(W) for c in range(ch)] for y in range(H)]
    png(p(f"filters_{name}.png"), W, H, ch, ctype, rows)
# Palette image: index (x + y) % 4 into a 4-colour palette, the last entry half transparent.
plte = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30])
png(p("palette.png"), W, H, 1, 3, [[(x + y) % 4 for x in range(W)] for y in range(H)],
    plte=plte, trns=bytes([255, 255, 255, 128]))
