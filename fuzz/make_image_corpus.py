#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_image (fuzz/corpus/image/): tiny valid JPEGs (gray, RGB
4:2:0 and 4:4:4, progressive, arithmetic-coded, with restart markers, large enough for
reduced-DCT decoding), PNGs (gray, RGB, RGBA, gray+alpha, palette with tRNS, 16-bit),
truncated ones, headers declaring 30000x30000, and a small decoded-image cache.

Every file starts with the harness's option byte (fuzz_image.cpp: bit 0 channels 1/3,
bits 1-2 augment mode, bit 3 train, bits 4-7 size). JPEGs come from cjpeg
(Debian: libjpeg-turbo-progs); PNGs and the cache are written here."""
import json
import os
import struct
import subprocess
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "image")


def put(name, options, data):
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes([options]) + data)


def opt(channels, mode, train, size):
    """size in 4..34, even."""
    return (1 if channels == 3 else 0) | (mode << 1) | (int(train) << 3) | (((size - 4) // 2) << 4)


def pixels(w, h, c):
    return bytes((x * 7 + y * 13 + k * 50) % 256 for y in range(h) for x in range(w) for k in range(c))


def cjpeg(w, h, c, *flags):
    magic = b"P5" if c == 1 else b"P6"
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "in.pnm")
        with open(src, "wb") as f:
            f.write(magic + b"\n%d %d\n255\n" % (w, h) + pixels(w, h, c))
        return subprocess.run(["cjpeg", *flags, src], check=True, capture_output=True).stdout


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(w, h, colour_type, depth, rows, extra=b""):
    """rows: raw scanline bytes without the filter byte, one entry per row."""
    raw = b"".join(b"\x00" + r for r in rows)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def png_rows(w, h, samples, depth):
    bpp = samples * depth // 8
    p = pixels(w, h, bpp)
    return [p[y * w * bpp:(y + 1) * w * bpp] for y in range(h)]


def with_size(jpeg, w, h):
    """The JPEG with its SOF frame size replaced (the scan data stays that of the small image)."""
    i = 2
    while i < len(jpeg):
        marker, length = jpeg[i + 1], struct.unpack(">H", jpeg[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC9, 0xCA):
            return jpeg[:i + 5] + struct.pack(">HH", h, w) + jpeg[i + 9:]
        i += 2 + length
    raise ValueError("no SOF")


def cache(base, channels, images, classes):
    """A decoded-image cache (src/nn/data/image_cache.h): images = [(h, w, label, split)]."""
    blob, records = b"", []
    for h, w, label, split in images:
        records.append(struct.pack("<QIIII", 16 + len(blob), h, w, label, split))
        blob += pixels(w, h, channels)
    header = json.dumps({"format": "vkqat-image-cache-1", "base_size": base, "channels": channels,
                         "classes": classes, "counts": {"train": sum(1 for i in images if i[3] == 0),
                                                        "val": sum(1 for i in images if i[3] == 1)},
                         "source": "seed"}).encode()
    footer = 16 + len(blob)
    body = struct.pack("<Q", len(header)) + header
    body += b"\x00" * (-(footer + len(body)) % 8)
    return b"VKQATIC1" + struct.pack("<Q", footer) + blob + body + b"".join(records)


jpeg_gray = cjpeg(16, 12, 1)
jpeg_rgb = cjpeg(20, 14, 3)
jpeg_prog = cjpeg(24, 18, 3, "-progressive")
put("jpeg-gray", opt(1, 0, False, 8), jpeg_gray)
put("jpeg-gray-as-rgb", opt(3, 1, True, 6), jpeg_gray)
put("jpeg-rgb420", opt(3, 0, False, 8), jpeg_rgb)
put("jpeg-rgb420-as-gray", opt(1, 2, True, 10), jpeg_rgb)
put("jpeg-rgb444", opt(3, 3, True, 8), cjpeg(12, 10, 3, "-sample", "1x1"))
put("jpeg-progressive", opt(3, 3, True, 12), jpeg_prog)
put("jpeg-progressive-gray", opt(1, 0, False, 8), cjpeg(16, 16, 1, "-progressive"))
put("jpeg-arithmetic", opt(3, 1, True, 8), cjpeg(16, 16, 3, "-arithmetic"))
put("jpeg-restart", opt(3, 2, True, 8), cjpeg(32, 16, 3, "-restart", "1B"))
put("jpeg-reduced-dct", opt(3, 0, False, 4), cjpeg(64, 48, 3, "-quality", "30"))  # base 4: decoded at 1/8
put("jpeg-truncated", opt(3, 0, False, 8), jpeg_rgb[:len(jpeg_rgb) // 2])
put("jpeg-header-only", opt(3, 0, False, 8), jpeg_rgb[:200])
put("jpeg-30000x30000", opt(3, 0, False, 8), with_size(jpeg_rgb, 30000, 30000))
put("jpeg-30000x30000-progressive", opt(3, 3, True, 32), with_size(jpeg_prog, 30000, 30000))

put("png-gray", opt(1, 0, False, 8), png(9, 7, 0, 8, png_rows(9, 7, 1, 8)))
put("png-rgb", opt(3, 1, True, 8), png(10, 6, 2, 8, png_rows(10, 6, 3, 8)))
put("png-rgba-as-gray", opt(1, 3, True, 6), png(7, 9, 6, 8, png_rows(7, 9, 4, 8)))
put("png-gray-alpha", opt(3, 2, True, 8), png(8, 8, 4, 8, png_rows(8, 8, 2, 8)))
palette = chunk(b"PLTE", bytes(range(12))) + chunk(b"tRNS", b"\x00\x80")
put("png-palette", opt(3, 0, False, 6), png(6, 5, 3, 8, [bytes((x + y) % 4 for x in range(6)) for y in range(5)], palette))
put("png-palette-4bit", opt(1, 0, False, 4), png(5, 5, 3, 4, [bytes([0x12, 0x30, 0x20]) for _ in range(5)], palette))
put("png-gray16", opt(1, 1, True, 8), png(8, 6, 0, 16, png_rows(8, 6, 1, 16)))
put("png-rgb16", opt(3, 0, False, 8), png(6, 6, 2, 16, png_rows(6, 6, 3, 16)))
put("png-gray1bit", opt(1, 0, False, 8), png(16, 4, 0, 1, [b"\xa5\x0f"] * 4))
good = png(10, 6, 2, 8, png_rows(10, 6, 3, 8))
put("png-truncated", opt(3, 0, False, 8), good[:len(good) - 20])
put("png-30000x30000", opt(3, 0, False, 8), png(30000, 30000, 2, 8, [b"\x00" * 3] * 2))

put("cache", opt(3, 0, True, 8), cache(8, 3, [(8, 10, 0, 0), (12, 8, 1, 0), (8, 8, 1, 1)], ["a", "b"]))
put("cache-gray", opt(1, 3, True, 6), cache(7, 1, [(7, 7, 2, 0), (9, 7, 0, 1)], ["a", "b", "c"]))
