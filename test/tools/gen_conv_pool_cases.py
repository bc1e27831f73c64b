#!/usr/bin/env python3
"""Reference values for the convolution and pooling cases the shared oracle lacks.

Writes test/data/oracle/ops/conv_pool_extra.safetensors (read by test/ops/conv.cpp and
test/ops/pool.cpp): conv1d, conv2d with groups/dilation/1x1/unbatched inputs,
conv_transpose1d/2d, max_pool2d with ceil_mode/dilation/NaN/-inf, avg_pool2d with ceil_mode,
count_include_pad=False and divisor_override, adaptive average and max pooling.

Run with Debian's Python (python3-torch 1.13, python3-numpy):
    /usr/bin/python3 test/tools/gen_conv_pool_cases.py
Deterministic: the same bytes on every run.

Layout: for case NAME, tensors NAME.in0 (input), NAME.in1 (weight), NAME.in2 (bias, when
present), NAME.out, NAME.out1 (int64 max indices), NAME.upstream and NAME.grad0 / NAME.grad1
(d sum(out * upstream) / d input, weight, for conv2d, conv_transpose2d and pooling cases). Inputs are stored as F32 (values
rounded to float32, so float and double tests read the same inputs); outputs and gradients
are computed by torch in float64 and stored as F64. __metadata__ holds, per case, a JSON
string {"op": ..., "args": {...}}.
"""

from __future__ import annotations

import json
import os
import struct
import zlib

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "oracle", "ops",
                   "conv_pool_extra.safetensors")

rng = np.random.default_rng(zlib.crc32(b"ember-test/conv_pool_extra"))
tensors: dict[str, np.ndarray] = {}
meta: dict[str, str] = {}


def rand(*shape):
    """Float32-representable values, as float64 torch tensors."""
    return torch.from_numpy(rng.standard_normal(shape).astype(np.float32).astype(np.float64))


def add_case(name, op, args, inputs, fn, grads=False, indices=False):
    ins = [t.clone().requires_grad_(grads) for t in inputs]
    res = fn(*ins)
    out, idx = (res if indices else (res, None))
    meta[name] = json.dumps({"op": op, "args": args}, sort_keys=True)
    for i, t in enumerate(inputs):
        tensors[f"{name}.in{i}"] = t.numpy().astype(np.float32)
    tensors[f"{name}.out"] = out.detach().numpy().astype(np.float64)
    if idx is not None:
        tensors[f"{name}.out1"] = idx.numpy().astype(np.int64)
    if grads:
        up = rand(*out.shape)
        gs = torch.autograd.grad(out, ins[:2], up)
        tensors[f"{name}.upstream"] = up.numpy().astype(np.float32)
        for i, g in enumerate(gs):
            tensors[f"{name}.grad{i}"] = g.numpy().astype(np.float64)


# ---- conv2d ---------------------------------------------------------------------------------
def conv2d_case(name, x, w, b, stride, padding, dilation, groups):
    args = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups,
            "bias": b is not None}
    ins = [x, w] + ([b] if b is not None else [])
    add_case(name, "conv2d", args, ins,
             lambda *t: F.conv2d(t[0], t[1], t[2] if len(t) > 2 else None, stride, padding,
                                 dilation, groups),
             grads=x.dim() == 4)


conv2d_case("c2d_dil", rand(1, 3, 7, 6), rand(4, 3, 3, 2), rand(4), 1, [2, 1], [2, 1], 1)
conv2d_case("c2d_groups3", rand(2, 6, 5, 7), rand(9, 2, 3, 3), rand(9), [1, 2], [0, 1], 1, 3)
conv2d_case("c2d_1x1", rand(2, 5, 4, 3), rand(3, 5, 1, 1), rand(3), 1, 0, 1, 1)
conv2d_case("c2d_1x1_s2", rand(1, 3, 5, 5), rand(2, 3, 1, 1), None, 2, 0, 1, 1)
conv2d_case("c2d_unbatched", rand(2, 6, 6), rand(3, 2, 5, 5), rand(3), 1, 2, 1, 1)
conv2d_case("c2d_exact", rand(1, 2, 3, 4), rand(2, 2, 5, 4), rand(2), 1, [1, 0], 1, 1)
conv2d_case("c2d_depthwise_x2", rand(1, 3, 6, 6), rand(6, 1, 3, 3), rand(6), 2, 1, 1, 3)
conv2d_case("c2d_big_dil", rand(2, 2, 9, 8), rand(4, 1, 3, 2), None, [2, 3], [3, 1], [3, 2], 2)

# ---- conv1d ---------------------------------------------------------------------------------
def conv1d_case(name, x, w, b, stride, padding, dilation, groups):
    args = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups,
            "bias": b is not None}
    ins = [x, w] + ([b] if b is not None else [])
    add_case(name, "conv1d", args, ins,
             lambda *t: F.conv1d(t[0], t[1], t[2] if len(t) > 2 else None, stride, padding,
                                 dilation, groups))


conv1d_case("c1d_0", rand(2, 4, 9), rand(6, 2, 3), rand(6), 2, 1, 2, 2)
conv1d_case("c1d_unbatched", rand(3, 7), rand(2, 3, 1), None, 1, 0, 1, 1)
conv1d_case("c1d_pad", rand(1, 2, 5), rand(3, 2, 4), rand(3), 3, 2, 1, 1)

# ---- conv_transpose2d / 1d -------------------------------------------------------------------
def convt2d_case(name, x, w, b, stride, padding, output_padding, groups, dilation):
    args = {"stride": stride, "padding": padding, "output_padding": output_padding,
            "groups": groups, "dilation": dilation, "bias": b is not None}
    ins = [x, w] + ([b] if b is not None else [])
    add_case(name, "conv_transpose2d", args, ins,
             lambda *t: F.conv_transpose2d(t[0], t[1], t[2] if len(t) > 2 else None, stride,
                                           padding, output_padding, groups, dilation),
             grads=x.dim() == 4)


convt2d_case("ct2d_s2", rand(2, 4, 3, 4), rand(4, 3, 3, 3), rand(3), 2, 1, 1, 1, 1)
convt2d_case("ct2d_groups_dil", rand(1, 4, 4, 3), rand(4, 2, 2, 3), rand(4), [1, 2], [0, 1],
             [0, 1], 2, 2)
convt2d_case("ct2d_1x1", rand(2, 3, 4, 5), rand(3, 4, 1, 1), rand(4), 1, 0, 0, 1, 1)
convt2d_case("ct2d_unbatched_gaps", rand(3, 5, 5), rand(3, 2, 2, 2), None, 3, 2, 0, 1, 1)
convt2d_case("ct2d_op_dil", rand(1, 2, 4, 4), rand(2, 2, 3, 3), rand(2), 1, 0, 1, 1, 2)


def convt1d_case(name, x, w, b, stride, padding, output_padding, groups, dilation):
    args = {"stride": stride, "padding": padding, "output_padding": output_padding,
            "groups": groups, "dilation": dilation, "bias": b is not None}
    ins = [x, w] + ([b] if b is not None else [])
    add_case(name, "conv_transpose1d", args, ins,
             lambda *t: F.conv_transpose1d(t[0], t[1], t[2] if len(t) > 2 else None, stride,
                                           padding, output_padding, groups, dilation))


convt1d_case("ct1d_0", rand(2, 4, 6), rand(4, 3, 3), rand(3), 2, 1, 1, 1, 1)
convt1d_case("ct1d_groups", rand(4, 5), rand(4, 1, 2), None, 1, 0, 0, 2, 3)

# ---- max_pool2d -----------------------------------------------------------------------------
def max_pool_case(name, x, kernel, stride, padding, dilation, ceil_mode):
    args = {"kernel": kernel, "stride": stride, "padding": padding, "dilation": dilation,
            "ceil_mode": ceil_mode}
    add_case(name, "max_pool2d", args, [x],
             lambda t: F.max_pool2d(t, kernel, stride, padding, dilation, ceil_mode,
                                    return_indices=True),
             grads=x.dim() == 4 and not torch.isnan(x).any(), indices=True)


special = rand(1, 2, 4, 5)
special[0, 0, 0, 1] = float("nan")
special[0, 0, 1, 0] = float("nan")   # two NaNs in one window: the later one's index wins
special[0, 0, 2:4, 0:2] = float("-inf")  # a window of only -inf: the first pixel's index
special[0, 1, 1, 3] = special[0, 1, 1, 4] = 5.0  # a tie: the first one wins
max_pool_case("mp_ceil", rand(1, 2, 6, 7), 3, 2, 0, 1, True)
max_pool_case("mp_ceil_pad", rand(1, 1, 5, 5), 2, 2, 1, 1, True)
max_pool_case("mp_dil", rand(2, 2, 7, 6), 3, 1, 1, 2, False)
max_pool_case("mp_special", special, 2, [2, 3], 0, 1, True)
max_pool_case("mp_unbatched", rand(3, 5, 5), 2, None, 0, 1, False)
max_pool_case("mp_rect", rand(1, 2, 5, 6), [3, 1], 1, [1, 0], [1, 2], False)

# ---- avg_pool2d -----------------------------------------------------------------------------
def avg_pool_case(name, x, kernel, stride, padding, ceil_mode, count_include_pad, divisor):
    args = {"kernel": kernel, "stride": stride, "padding": padding, "ceil_mode": ceil_mode,
            "count_include_pad": count_include_pad, "divisor_override": divisor}
    add_case(name, "avg_pool2d", args, [x],
             lambda t: F.avg_pool2d(t, kernel, stride, padding, ceil_mode, count_include_pad,
                                    divisor),
             grads=x.dim() == 4)


avg_pool_case("ap_ceil_incl", rand(1, 2, 6, 6), 3, 2, 1, True, True, None)
avg_pool_case("ap_ceil_excl", rand(1, 2, 6, 6), 3, 2, 1, True, False, None)
avg_pool_case("ap_divisor", rand(2, 1, 5, 7), [2, 3], 2, 1, False, True, 5)
avg_pool_case("ap_unbatched", rand(2, 5, 4), 2, None, 0, False, True, None)
avg_pool_case("ap_ceil_edge", rand(1, 1, 5, 5), 2, 2, 1, True, True, None)

# ---- adaptive pooling -------------------------------------------------------------------------
def adaptive_case(name, op, x, size):
    if op == "adaptive_max_pool2d":
        fn = lambda t: F.adaptive_max_pool2d(t, size, return_indices=True)
    else:
        fn = lambda t: F.adaptive_avg_pool2d(t, size)
    add_case(name, op, {"output_size": size}, [x], fn, grads=x.dim() == 4,
             indices=op == "adaptive_max_pool2d")


adaptive_case("aap_overlap", "adaptive_avg_pool2d", rand(2, 3, 7, 5), [3, 2])
adaptive_case("aap_global", "adaptive_avg_pool2d", rand(1, 2, 4, 4), 1)
adaptive_case("aap_up", "adaptive_avg_pool2d", rand(3, 5, 6), [4, 8])
adaptive_case("amp_overlap", "adaptive_max_pool2d", rand(2, 3, 7, 5), [3, 2])
adaptive_case("amp_same", "adaptive_max_pool2d", rand(1, 2, 3, 4), [3, 4])


# ---- writer (safetensors: 8-byte LE header length, JSON header padded to 8, raw LE data) --------
def save(path):
    tags = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}
    names = sorted(tensors, key=lambda n: (-tensors[n].dtype.itemsize, n))
    header = {"__metadata__": dict(sorted(meta.items()))}
    blobs, pos = [], 0
    for n in names:
        a = np.ascontiguousarray(tensors[n]).astype(tensors[n].dtype.newbyteorder("<"))
        b = a.tobytes()
        header[n] = {"dtype": tags[a.dtype.newbyteorder("=")], "shape": list(a.shape),
                     "data_offsets": [pos, pos + len(b)]}
        blobs.append(b)
        pos += len(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


save(OUT)
print(f"wrote {os.path.normpath(OUT)}: {len(meta)} cases, {os.path.getsize(OUT)} bytes")
