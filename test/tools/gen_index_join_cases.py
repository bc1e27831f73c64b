#!/usr/bin/env python3
"""Golden cases from PyTorch for the indexing, joining and scan ops the shared oracle lacks.

Writes test/data/oracle/ops/index_join_extra.safetensors (read by test/ops/index.cpp and
test/ops/join.cpp). Run with Debian's python3 (torch 1.13 from python3-torch, numpy):

    /usr/bin/python3 test/tools/gen_index_join_cases.py

Layout, as the shared oracle (oracle/INDEX.md): tensors `caseI.inJ` (inputs in call order),
`caseI.out` and `caseI.out1` (second output: topk/sort indices); metadata `caseI` = JSON
{op, expr, args, out_shapes?} and `num_cases`. Floats are F64 unless a case says "f32".
Inputs come from numpy's default_rng(crc32('ember-index-join/<i>')); the output is
deterministic and byte-identical across reruns.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
OUT = Path(__file__).resolve().parent.parent / "data" / "oracle" / "ops" / "index_join_extra.safetensors"
TAGS = {np.dtype("float64"): "F64", np.dtype("float32"): "F32", np.dtype("int64"): "I64",
        np.dtype("bool"): "BOOL"}


def save(tensors: dict, path: Path, metadata: dict) -> None:
    """Minimal safetensors writer: 8-byte dtypes first, then by name; no gaps."""
    arrs = {k: np.ascontiguousarray(v.numpy() if isinstance(v, torch.Tensor) else v)
            for k, v in tensors.items()}
    order = sorted(arrs, key=lambda k: (-arrs[k].dtype.itemsize, k))
    header, blobs, pos = {"__metadata__": metadata}, [], 0
    for k in order:
        b = arrs[k].astype(arrs[k].dtype.newbyteorder("<")).tobytes()
        header[k] = {"dtype": TAGS[arrs[k].dtype], "shape": list(arrs[k].shape),
                     "data_offsets": [pos, pos + len(b)]}
        blobs.append(b)
        pos += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (len(h) + 8) % 8) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


tensors: dict = {}
meta: dict = {}
count = 0


def rng(i: int) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"ember-index-join/{i}".encode()))


def randn(r, *shape, f32=False):
    return torch.tensor(r.standard_normal(shape), dtype=torch.float32 if f32 else torch.float64)


def case(op: str, expr: str, args: dict, inputs: list, out, out1=None, **extra) -> None:
    global count
    p = f"case{count}"
    for j, t in enumerate(inputs):
        tensors[f"{p}.in{j}"] = t
    if out is not None:
        tensors[f"{p}.out"] = out
    if out1 is not None:
        tensors[f"{p}.out1"] = out1
    meta[p] = json.dumps({"op": op, "expr": expr, "args": args, **extra}, sort_keys=True)
    count += 1


def idx(r, high, *shape):
    return torch.tensor(r.integers(0, high, shape), dtype=torch.int64)


def main() -> None:
    # ---- gather / scatter / scatter_add / index_add ---------------------------------------
    for shape, dim, ishape in [((3, 4), 1, (3, 2)), ((3, 4), 0, (2, 4)), ((3, 5), 1, (2, 7)),
                               ((2, 3, 4), -1, (2, 3, 3)), ((4, 3, 2), 0, (6, 2, 1))]:
        r = rng(count)
        x, i = randn(r, *shape), idx(r, shape[dim], *ishape)
        case("gather", f"torch.gather(in0, {dim}, in1)", {"dim": dim}, [x, i], torch.gather(x, dim, i))
    for shape, dim, ishape, sshape in [((3, 5), 1, (3, 4), (3, 4)), ((4, 3), 0, (6, 3), (6, 3)),
                                       ((3, 5), 1, (2, 3), (3, 4)), ((2, 3, 4), 1, (2, 5, 2), (2, 5, 3))]:
        r = rng(count)
        x, i, s = randn(r, *shape), idx(r, shape[dim], *ishape), randn(r, *sshape)
        case("scatter_add", f"torch.scatter_add(in0, {dim}, in1, in2)", {"dim": dim}, [x, i, s],
             torch.scatter_add(x, dim, i, s))
    r = rng(count)  # scatter without duplicate targets (PyTorch leaves their order unspecified)
    x, s = randn(r, 3, 5), randn(r, 3, 5)
    i = torch.stack([torch.tensor(r.permutation(5)[:4]) for _ in range(3)])
    case("scatter", "torch.scatter(in0, 1, in1, in2)", {"dim": 1}, [x, i, s], torch.scatter(x, 1, i, s))
    for shape, dim, n, alpha in [((5, 3), 0, 7, 1.0), ((3, 4), 1, 5, 2.5), ((2, 3, 4), 2, 3, -1.0)]:
        r = rng(count)
        x, i = randn(r, *shape), idx(r, shape[dim], n)
        sshape = list(shape)
        sshape[dim] = n
        s = randn(r, *sshape)
        case("index_add", f"torch.index_add(in0, {dim}, in1, in2, alpha={alpha})",
             {"dim": dim, "alpha": alpha}, [x, i, s], torch.index_add(x, dim, i, s, alpha=alpha))
    r = rng(count)
    w, i = randn(r, 7, 3), idx(r, 7, 2, 4)
    case("embedding", "F.embedding(in1, in0, padding_idx=-1)", {"padding_idx": -1}, [w, i],
         F.embedding(i, w, padding_idx=-1))
    # ---- one_hot, masked_fill, masked_select ----------------------------------------------
    r = rng(count)
    lab = idx(r, 6, 7)
    case("one_hot", "F.one_hot(in0)", {"num_classes": -1}, [lab], F.one_hot(lab))
    lab = idx(r, 4, 2, 3)
    case("one_hot", "F.one_hot(in0, 6)", {"num_classes": 6}, [lab], F.one_hot(lab, 6))
    r = rng(count)
    x, m = randn(r, 3, 4), torch.tensor(r.random((3, 4)) < 0.4)
    case("masked_fill", "in0.masked_fill(in1, -2.5)", {"value": -2.5}, [x, m], x.masked_fill(m, -2.5))
    m = torch.tensor(r.random((2, 3, 1)) < 0.5)
    case("masked_fill", "in0.masked_fill(in1, 7.0)  (broadcasting both)", {"value": 7.0}, [x[0], m],
         x[0].masked_fill(m, 7.0))
    m = torch.tensor(r.random((3, 1)) < 0.6)
    case("masked_select", "torch.masked_select(in0, in1)", {}, [x, m], torch.masked_select(x, m))
    # ---- cat / stack beyond the shared oracle -----------------------------------------------
    r = rng(count)
    a, b = randn(r, 2, 3, 4), randn(r, 2, 1, 4)
    case("cat", "torch.cat([in0, in1, in2, in0], 1)  (in2 = empty 1-D: skipped)", {"dim": 1},
         [a, b, torch.zeros(0, dtype=torch.float64)], torch.cat([a, b, torch.zeros(0, dtype=torch.float64), a], 1))
    case("stack", "torch.stack([in0, in1], 2)", {"dim": 2}, [a, a * 2], torch.stack([a, a * 2], 2))
    # ---- split / chunk: the output shapes ----------------------------------------------------
    x = torch.zeros(7, 6, dtype=torch.float64)
    for kind, arg, dim in [("split", 2, 0), ("split", 4, 1), ("split", 10, 0), ("split", [1, 4, 2], 0),
                           ("split", [0, 6], -1), ("chunk", 3, 0), ("chunk", 4, 1), ("chunk", 5, 1),
                           ("chunk", 7, 0)]:
        parts = torch.split(x, arg, dim) if kind == "split" else torch.chunk(x, arg, dim)
        case(kind, f"torch.{kind}(in0, {arg}, {dim})", {"arg": arg, "dim": dim}, [x], None,
             out_shapes=[list(p.shape) for p in parts])
    # ---- pad ---------------------------------------------------------------------------------
    for shape, pads, mode, value in [((3, 4), (1, 2), "constant", 0.0), ((3, 4), (1, 1, 2, 0), "constant", 1.5),
                                     ((3, 4), (-1, 2), "constant", 0.0), ((2, 3, 4), (1, 1, 1, 1, 1, 1), "constant", -1.0),
                                     ((3, 4), (0, 0, -1, -2), "constant", 0.0),
                                     ((1, 3, 4), (2, 1), "reflect", 0.0), ((2, 2, 3, 4), (1, 2, 2, 1), "reflect", 0.0),
                                     ((1, 3, 4), (-1, 2), "reflect", 0.0),
                                     ((1, 3, 4), (2, 3), "replicate", 0.0), ((1, 2, 3, 4), (1, 2, 2, 1), "replicate", 0.0),
                                     ((1, 3, 4), (3, 1), "circular", 0.0), ((1, 2, 3, 4), (1, 2, 3, 0), "circular", 0.0),
                                     ((1, 3, 4), (-1, 1), "circular", 0.0)]:
        r = rng(count)
        x = randn(r, *shape)
        kw = {"value": value} if mode == "constant" else {}
        case("pad", f"F.pad(in0, {pads}, mode='{mode}'" + (f", value={value})" if kw else ")"),
             {"pad": list(pads), "mode": mode, "value": value}, [x], F.pad(x, pads, mode=mode, **kw))
    # ---- cumsum / cumprod ---------------------------------------------------------------------
    for shape, dim, f32 in [((3, 4), 0, False), ((3, 4), 1, False), ((2, 3, 4), -2, False),
                            ((2, 3, 4), 2, False), ((500,), 0, True), ((3, 300), 0, True)]:
        r = rng(count)
        x = randn(r, *shape, f32=f32)
        case("cumsum", f"torch.cumsum(in0, {dim})", {"dim": dim, "f32": f32}, [x], torch.cumsum(x, dim))
    r = rng(count)
    xi = idx(r, 100, 3, 5) - 50
    case("cumsum", "torch.cumsum(in0, 1)  (int64)", {"dim": 1}, [xi], torch.cumsum(xi, 1))
    for shape, dim in [((3, 5), 1), ((4, 3), 0)]:
        r = rng(count)
        x = 1 + 0.3 * randn(r, *shape)
        case("cumprod", f"torch.cumprod(in0, {dim})", {"dim": dim}, [x], torch.cumprod(x, dim))
    # ---- tril / triu ----------------------------------------------------------------------------
    for shape, k in [((4, 5), 0), ((4, 5), 1), ((4, 5), -2), ((2, 3, 4), 0), ((5, 3), 3), ((3, 4), -5)]:
        r = rng(count)
        x = randn(r, *shape)
        case("tril", f"torch.tril(in0, {k})", {"diagonal": k}, [x], torch.tril(x, k))
        case("triu", f"torch.triu(in0, {k})", {"diagonal": k}, [x], torch.triu(x, k))
    # ---- topk / sort (random values: no ties) --------------------------------------------------
    for shape, k, dim, largest in [((5, 8), 3, 1, True), ((5, 8), 2, 0, False), ((2, 6, 3), 6, 1, True),
                                   ((40,), 5, 0, True), ((4, 7), 0, 1, True), ((3, 9), 9, -1, False)]:
        r = rng(count)
        x = randn(r, *shape)
        v, i = torch.topk(x, k, dim, largest=largest, sorted=True)
        case("topk", f"torch.topk(in0, {k}, {dim}, largest={largest})",
             {"k": k, "dim": dim, "largest": largest}, [x], v, i)
    x = torch.tensor([[1.0, float("nan"), 3.0, float("inf"), -2.0],
                      [float("-inf"), 0.5, float("nan"), -1.0, 2.0]], dtype=torch.float64)
    for k, largest in [(3, True), (4, False)]:
        v, i = torch.topk(x, k, 1, largest=largest)
        case("topk", f"torch.topk(in0, {k}, 1, largest={largest})  (NaN is the largest)",
             {"k": k, "dim": 1, "largest": largest}, [x], v, i)
    for shape, dim, desc in [((4, 6), 1, False), ((4, 6), 0, True), ((2, 3, 5), -1, True)]:
        r = rng(count)
        x = randn(r, *shape)
        v, i = torch.sort(x, dim, descending=desc)
        case("sort", f"torch.sort(in0, {dim}, descending={desc})", {"dim": dim, "descending": desc},
             [x], v, i)

    metadata = {"format": "ember-index-join/1", "num_cases": str(count),
                "torch_version": torch.__version__, **meta}
    save(tensors, OUT, metadata)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {count} cases)")


if __name__ == "__main__":
    main()
