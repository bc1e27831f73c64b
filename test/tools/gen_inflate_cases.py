#!/usr/bin/env python3
"""Compressed streams for test/dataio/inflate.cpp, made by Python's zlib and gzip modules.

Writes test/dataio/inflate_cases.inc (C++ arrays). Run with Debian's python3:

    /usr/bin/python3 test/tools/gen_inflate_cases.py

Each case compresses one of the payloads below, which test/dataio/inflate.cpp regenerates
byte for byte (payload(kind, n)), with a given container, level and strategy, so the test
checks the decoded bytes exactly. Stored, fixed-Huffman and dynamic-Huffman blocks all occur
(level 0, Z_FIXED, the default strategy; full flushes split streams into several blocks).
Also written: hand-assembled invalid streams (a distance before the start of the output,
over-subscribed codes) and a 1 MiB run of zeros for the output limit. Deterministic output.
"""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "dataio" / "inflate_cases.inc"


def payload(kind: int, n: int) -> bytes:
    """Kind 0: text lines; 1: LCG noise (incompressible); 2: four-letter LCG text;
    3: 200 noise bytes, zeros, the same 200 bytes again (a match 32,700 bytes back)."""
    if kind == 0:
        out = bytearray()
        i = 0
        while len(out) < n:
            out += b"ember inflate test line %d: the quick brown fox\n" % i
            i += 1
        return bytes(out[:n])
    x = 12345
    out = bytearray()
    for _ in range(n if kind != 3 else 200):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out.append((x >> 16) & 0xFF if kind != 2 else ord("a") + ((x >> 16) & 3))
    if kind == 3:
        out = out + bytes(n - 400) + out
    return bytes(out)


def raw(data: bytes, level: int, strategy: int = zlib.Z_DEFAULT_STRATEGY, flush_at=None) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -15, 9, strategy)
    if flush_at is None:
        return c.compress(data) + c.flush()
    return c.compress(data[:flush_at]) + c.flush(zlib.Z_FULL_FLUSH) + c.compress(data[flush_at:]) + c.flush()


def gz(data: bytes, level: int, name: str | None = None) -> bytes:
    if name is None:
        return gzip.compress(data, compresslevel=level, mtime=0)
    buf = io.BytesIO()
    with gzip.GzipFile(filename=name, mode="wb", compresslevel=level, fileobj=buf, mtime=0) as f:
        f.write(data)
    return buf.getvalue()


class Bits:
    """LSB-first bit writer; Huffman codes are written most significant bit first."""

    def __init__(self) -> None:
        self.acc, self.n, self.out = 0, 0, bytearray()

    def put(self, v: int, n: int) -> None:
        self.acc |= v << self.n
        self.n += n
        while self.n >= 8:
            self.out.append(self.acc & 0xFF)
            self.acc >>= 8
            self.n -= 8

    def code(self, c: int, n: int) -> None:
        self.put(int(format(c, "0%db" % n)[::-1], 2), n)

    def done(self) -> bytes:
        if self.n:
            self.out.append(self.acc & 0xFF)
        return bytes(self.out)


def far_distance() -> bytes:
    """Fixed block: length 3 (symbol 257, code 0000001) at distance 1 before any output."""
    b = Bits()
    b.put(1, 1)
    b.put(1, 2)
    b.code(1, 7)
    b.code(0, 5)
    b.code(0, 7)  # end of block
    return b.done()


def oversubscribed() -> bytes:
    """Dynamic block whose code-length code gives 19 symbols one-bit codes."""
    b = Bits()
    b.put(1, 1)
    b.put(2, 2)
    b.put(0, 5)
    b.put(0, 5)
    b.put(15, 4)
    for _ in range(19):
        b.put(1, 3)
    return b.done()


def main() -> None:
    cases = []  # (name, container, kind, n, bytes)
    # noise stays stored at every level; kind 3 stored would take 33 kB
    levels = {0: (0, 1, 6, 9), 1: (0, 6), 2: (0, 1, 6, 9), 3: (1, 6, 9)}
    for kind, n in [(0, 2000), (1, 300), (2, 1200), (3, 33100)]:
        for level in levels[kind]:
            cases.append((f"raw_k{kind}_l{level}", "raw", kind, n, raw(payload(kind, n), level)))
        cases.append((f"raw_k{kind}_fixed", "raw", kind, n,
                      raw(payload(kind, n), 6, zlib.Z_FIXED)))
        cases.append((f"gzip_k{kind}_l6", "gzip", kind, n, gz(payload(kind, n), 6)))
        cases.append((f"zlib_k{kind}_l9", "zlib", kind, n, zlib.compress(payload(kind, n), 9)))
    data = payload(0, 2500)
    cases.append(("raw_flushed", "raw", 0, 2500, raw(data, 6, flush_at=1000)))
    cases.append(("raw_huffman_only", "raw", 0, 2500, raw(data, 6, zlib.Z_HUFFMAN_ONLY)))
    cases.append(("raw_rle", "raw", 2, 2500, raw(payload(2, 2500), 6, zlib.Z_RLE)))
    cases.append(("raw_empty", "raw", 0, 0, raw(b"", 6)))
    cases.append(("gzip_empty", "gzip", 0, 0, gz(b"", 6)))
    cases.append(("gzip_named_l9", "gzip", 0, 2500, gz(data, 9, name="lines.txt")))
    cases.append(("gzip_two_members", "gzip", 0, 2500, gz(data[:1200], 1) + gz(data[1200:], 9)))
    cases.append(("gzip_zero_padded", "gzip", 0, 2500, gz(data, 6) + bytes(7)))

    def arr(b: bytes) -> str:
        rows = [", ".join("0x%02x" % x for x in b[i:i + 16]) for i in range(0, len(b), 16)]
        return "{\n    " + ",\n    ".join(rows) + "}" if rows else "{}"

    def decl(name: str, b: bytes) -> str:
        """Constant data (no code to run or compile) and a vector over it for the tests."""
        return (f"inline constexpr std::uint8_t {name}_data[] = {arr(b)};\n"
                f"inline const std::vector<std::uint8_t> {name}(std::begin({name}_data), std::end({name}_data));")

    lines = ["// Generated by test/tools/gen_inflate_cases.py (Python zlib %s): do not edit."
             % zlib.ZLIB_RUNTIME_VERSION, ""]
    for name, _, _, _, b in cases:
        lines.append(decl(name, b))
    lines.append("")
    lines.append("inline const std::vector<inflate_case> all_cases = {")
    for name, container, kind, n, _ in cases:
        lines.append(f'    {{"{name}", container::{container}, {kind}, {n}, &{name}}},')
    lines.append("};")
    lines.append("")
    lines.append("// hand-assembled invalid raw streams")
    lines.append(decl("bad_far_distance", far_distance()))
    lines.append(decl("bad_oversubscribed", oversubscribed()))
    lines.append("// zlib.compress(bytes(1 << 20), 9): 1 MiB of zeros")
    lines.append(decl("zeros_1mib", zlib.compress(bytes(1 << 20), 9)))
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
