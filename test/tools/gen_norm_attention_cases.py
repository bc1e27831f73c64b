#!/usr/bin/env python3
"""Golden values for the normalization and attention cases the shared oracle lacks.

Writes test/data/oracle/ops/norm_attention_extra.safetensors (read by test/ops/norm.cpp and
test/ops/attention.cpp): group_norm, more batch_norm (eval without affine, no running stats,
large offsets, S >= 16 runs), layer_norm (weight only / bias only, long rows, offsets) and
scaled_dot_product_attention (causal, bool and float masks, broadcast batch dims, custom scale,
a fully masked row, rank 5, several 64-row tiles).

Run with Debian's python (python3-torch 1.13, python3-numpy):
    /usr/bin/python3 test/tools/gen_norm_attention_cases.py
Deterministic: reruns write identical bytes.

Layout: tensor "<family>.<dtype>.case<I>.<name>" with dtype f64 or f32 and names x, weight,
bias, running_mean, running_var, q, k, v, mask (inputs), out, running_mean_out,
running_var_out (outputs); metadata "<family>.num_cases" and "<family>.case<I>" = JSON args.
f64 outputs are torch's float64 results. f32 inputs are the f64 inputs rounded to float32 and
f32 outputs are torch's float64 results on those rounded inputs, rounded to float32 (the
correctly rounded answer; compare with |got - want| <= 1e-5 * (1 + |want|)).
torch 1.13 has no F.scaled_dot_product_attention: attention is PyTorch 2.x's math definition
softmax(q @ k^T * scale + mask) @ v written with torch ops (bool mask: False -> -inf; causal:
keys j > query i masked, top-left aligned), which gives NaN for a fully masked row.
"""
import json
import math
import os
import struct
import zlib

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "oracle", "ops",
                   "norm_attention_extra.safetensors")


def rng_for(name):
    return np.random.default_rng(zlib.crc32(("ember-norm-attention/" + name).encode()))


def save_safetensors(tensors, metadata, path):
    """Minimal safetensors writer: sorted names, no gaps, header padded to 8 bytes."""
    tags = {np.dtype("float64"): "F64", np.dtype("float32"): "F32", np.dtype("bool"): "BOOL"}
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": tags[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


tensors, metadata = {}, {}


def add_case(family, index, args, inputs, compute):
    """inputs: name -> float64 numpy array (or bool); compute(dict of torch tensors) -> outputs."""
    metadata[f"{family}.case{index}"] = json.dumps(args, sort_keys=True)
    for dt, np_t in (("f64", np.float64), ("f32", np.float32)):
        ins = {}
        for name, a in inputs.items():
            a = a if a.dtype == np.bool_ else a.astype(np_t)
            tensors[f"{family}.{dt}.case{index}.{name}"] = a
            ins[name] = torch.from_numpy(a if a.dtype == np.bool_ else a.astype(np.float64))
        with torch.no_grad():
            outs = compute(ins)
        for name, t in outs.items():
            tensors[f"{family}.{dt}.case{index}.{name}"] = t.numpy().astype(np_t)


# ---- group_norm -----------------------------------------------------------------------------
def group_norm_cases():
    r = rng_for("group_norm")
    specs = [  # shape, groups, eps, affine, offset
        ((2, 6, 4, 3), 3, 1e-5, "both", 0.0),
        ((3, 4, 5), 2, 1e-5, "none", 0.0),
        ((2, 4), 4, 1e-5, "both", 0.0),  # one element per group: output = bias
        ((2, 6, 10), 1, 1e-3, "both", 50.0),
        ((2, 8, 5), 4, 1e-5, "weight", 0.0),
    ]
    for i, (shape, g, eps, affine, off) in enumerate(specs):
        c = shape[1]
        inputs = {"x": r.standard_normal(shape) * 2.0 + off}
        if affine in ("both", "weight"):
            inputs["weight"] = r.standard_normal(c)
        if affine in ("both", "bias"):
            inputs["bias"] = r.standard_normal(c)
        args = {"num_groups": g, "eps": eps, "affine": affine}
        add_case("group_norm", i, args, inputs, lambda t, g=g, eps=eps: {
            "out": F.group_norm(t["x"], g, t.get("weight"), t.get("bias"), eps)})
    metadata["group_norm.num_cases"] = str(len(specs))


# ---- batch_norm -----------------------------------------------------------------------------
def batch_norm_cases():
    r = rng_for("batch_norm")
    specs = [  # shape, training, momentum, eps, affine, running stats, offset
        ((3, 4, 5), False, 0.1, 1e-5, "none", True, 0.0),
        ((8, 5), True, 0.3, 1e-3, "both", True, 100.0),
        ((2, 3, 17), True, 0.1, 1e-5, "both", True, 0.0),
        ((4, 2, 3, 3), True, 0.1, 1e-5, "weight", False, 0.0),
        ((5, 3), False, 0.1, 1e-5, "both", True, 0.0),
    ]
    for i, (shape, training, mom, eps, affine, stats, off) in enumerate(specs):
        c = shape[1]
        inputs = {"x": r.standard_normal(shape) * 1.5 + off}
        if affine in ("both", "weight"):
            inputs["weight"] = r.standard_normal(c)
        if affine in ("both", "bias"):
            inputs["bias"] = r.standard_normal(c)
        if stats:
            inputs["running_mean"] = r.standard_normal(c)
            inputs["running_var"] = r.uniform(0.5, 2.0, c)
        args = {"training": training, "momentum": mom, "eps": eps, "affine": affine,
                "running_stats": stats}

        def compute(t, training=training, mom=mom, eps=eps, stats=stats):
            rm = t["running_mean"].clone() if stats else None
            rv = t["running_var"].clone() if stats else None
            out = {"out": F.batch_norm(t["x"], rm, rv, t.get("weight"), t.get("bias"),
                                       training, mom, eps)}
            if stats and training:
                out["running_mean_out"] = rm
                out["running_var_out"] = rv
            return out
        add_case("batch_norm", i, args, inputs, compute)
    metadata["batch_norm.num_cases"] = str(len(specs))


# ---- layer_norm -----------------------------------------------------------------------------
def layer_norm_cases():
    r = rng_for("layer_norm")
    specs = [  # shape, normalized_shape, eps, affine, offset
        ((4, 6), (6,), 1e-5, "weight", 0.0),
        ((2, 2, 3, 4), (2, 3, 4), 1e-5, "both", 1000.0),
        ((1, 300), (300,), 1e-5, "bias", 0.0),
        ((3, 70), (70,), 1e-5, "both", 0.0),
        ((5,), (5,), 0.1, "none", 0.0),
    ]
    for i, (shape, ns, eps, affine, off) in enumerate(specs):
        inputs = {"x": r.standard_normal(shape) + off}
        if affine in ("both", "weight"):
            inputs["weight"] = r.standard_normal(ns)
        if affine in ("both", "bias"):
            inputs["bias"] = r.standard_normal(ns)
        args = {"normalized_shape": list(ns), "eps": eps, "affine": affine}
        add_case("layer_norm", i, args, inputs, lambda t, ns=ns, eps=eps: {
            "out": F.layer_norm(t["x"], ns, t.get("weight"), t.get("bias"), eps)})
    metadata["layer_norm.num_cases"] = str(len(specs))


# ---- scaled_dot_product_attention -----------------------------------------------------------
def sdpa(t, is_causal, scale):
    q, k, v = t["q"], t["k"], t["v"]
    s = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    scores = q @ k.transpose(-2, -1) * s
    L, S = q.shape[-2], k.shape[-2]
    if is_causal:
        scores = scores.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), -math.inf)
    m = t.get("mask")
    if m is not None:
        scores = scores.masked_fill(~m, -math.inf) if m.dtype == torch.bool else scores + m
    return {"out": torch.softmax(scores, dim=-1) @ v}


def sdpa_cases():
    r = rng_for("scaled_dot_product_attention")

    def bool_mask(shape, full_row=None):
        m = r.uniform(size=shape) < 0.6
        m[..., 0] |= ~m.any(axis=-1)  # every row attends somewhere ...
        if full_row is not None:
            m[full_row, :] = False  # ... except this one
        return m

    specs = [  # q, k, v shapes, mask kind / shape, is_causal, scale, note
        ((2, 5, 4), (2, 5, 4), (2, 5, 3), None, True, None, "causal"),
        ((1, 3, 4), (1, 6, 4), (1, 6, 2), None, True, None, "causal, L < S"),
        ((1, 6, 4), (1, 3, 4), (1, 3, 2), None, True, None, "causal, L > S"),
        ((2, 3, 4, 8), (2, 3, 5, 8), (2, 3, 5, 6), ("bool", (2, 1, 4, 5)), False, None,
         "bool mask broadcast over heads"),
        ((3, 4, 6), (3, 5, 6), (3, 5, 2), ("float", (4, 5)), False, None, "additive mask"),
        ((2, 3, 4, 8), (1, 3, 6, 8), (3, 6, 5), None, False, 0.3, "broadcast batch, scale"),
        ((1, 3, 4), (1, 4, 4), (1, 4, 2), ("bool_full_row", (3, 4)), False, None,
         "row 1 fully masked: NaN"),
        ((2, 1, 2, 3, 4), (1, 2, 2, 5, 4), (2, 2, 2, 5, 3), ("bool", (5,)), False, None,
         "rank 5, key mask (S)"),
        ((1, 66, 4), (1, 5, 4), (1, 5, 2), ("float", (66, 5)), False, None, "two row tiles"),
    ]
    for i, (qs, ks, vs, mask, causal, scale, note) in enumerate(specs):
        inputs = {"q": r.standard_normal(qs), "k": r.standard_normal(ks), "v": r.standard_normal(vs)}
        kind = None
        if mask is not None:
            kind, mshape = mask
            if kind == "bool":
                inputs["mask"] = bool_mask(mshape)
            elif kind == "bool_full_row":
                inputs["mask"] = bool_mask(mshape, full_row=1)
                kind = "bool"
            else:
                inputs["mask"] = r.standard_normal(mshape)
        args = {"is_causal": causal, "scale": scale, "mask": kind, "note": note}
        add_case("sdpa", i, args, inputs, lambda t, c=causal, s=scale: sdpa(t, c, s))
    metadata["sdpa.num_cases"] = str(len(specs))


if __name__ == "__main__":
    group_norm_cases()
    batch_norm_cases()
    layer_norm_cases()
    sdpa_cases()
    metadata["generator"] = "test/tools/gen_norm_attention_cases.py"
    metadata["torch_version"] = torch.__version__
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_safetensors(tensors, metadata, OUT)
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes, {len(tensors)} tensors)")
