#!/usr/bin/env python3
"""Golden values for nn modules (test/nn/modules.cpp): state_dict keys, forward outputs,
parameter and input gradients, running statistics and printouts of torch.nn layers.

Run with Debian's python (python3-torch 1.13, python3-numpy):
    /usr/bin/python3 test/tools/gen_nn_cases.py
Deterministic: reruns write identical bytes.

Layout of test/data/nn/modules.safetensors (float64 modules, module.double()):
  case<I>.sd.<key>     the module's state_dict before the forward (random values, so that
                       every parameter and buffer matters)
  case<I>.in           the input (I64 for embedding)
  case<I>.out          module(in) in the case's mode (train or eval)
  case<I>.upstream     random cotangent U; case<I>.grad.<param> = d sum(out * U) / d param
  case<I>.grad_in      d sum(out * U) / d in (float inputs)
  case<I>.after.<key>  buffers after the forward (running statistics)
metadata: num_cases, case<I> = JSON {"module", "mode", "repr" (of the float32 module), "keys"
(the state_dict keys in order)}
"""
import json
import os
import sys
import zlib

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "shared", "tools"))
try:
    import safetensors_io  # the oracle's writer, when ../shared is beside the checkout
except ImportError:  # pragma: no cover
    sys.exit("needs shared/tools/safetensors_io.py beside the checkout")

torch.set_num_threads(1)


def cases():
    yield "linear", "train", lambda: nn.Linear(5, 3), (4, 5)
    yield "linear_nobias", "train", lambda: nn.Linear(5, 3, bias=False), (2, 3, 5)
    yield "conv2d", "train", lambda: nn.Conv2d(2, 4, 3, stride=2, padding=1), (2, 2, 7, 7)
    yield "conv2d_groups", "train", lambda: nn.Conv2d(4, 4, (3, 1), groups=2, dilation=2, bias=False), (1, 4, 8, 5)
    yield "conv1d", "train", lambda: nn.Conv1d(3, 6, 3, padding=2, groups=3), (2, 3, 9)
    yield "batch_norm1d_train", "train", lambda: nn.BatchNorm1d(4), (6, 4)
    yield "batch_norm2d_cumulative", "train", lambda: nn.BatchNorm2d(3, momentum=None), (2, 3, 4, 4)
    yield "batch_norm1d_eval", "eval", lambda: nn.BatchNorm1d(4), (5, 4, 3)
    yield "layer_norm", "train", lambda: nn.LayerNorm((4, 5)), (2, 3, 4, 5)
    yield "group_norm", "train", lambda: nn.GroupNorm(2, 6), (2, 6, 3, 3)
    yield "embedding", "train", lambda: nn.Embedding(10, 4, padding_idx=0), None
    yield "mlp", "train", lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3), nn.Tanh()), (4, 6)
    yield "cnn", "train", lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64, 5)), (2, 1, 8, 8)
    yield "activations", "train", lambda: nn.Sequential(
        nn.Linear(6, 6), nn.GELU(approximate="tanh"), nn.Linear(6, 6), nn.SiLU(), nn.LeakyReLU(0.2),
        nn.ELU(0.5), nn.Sigmoid(), nn.Linear(6, 4), nn.LogSoftmax(1)), (3, 6)
    yield "pools", "eval", lambda: nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.AvgPool2d(2), nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Softmax(1), nn.Dropout(0.3), nn.GELU()), (2, 2, 9, 9)


def attention_cases(rng, tensors, meta):
    """attn<I>.*: multihead attention and encoder layers (float64, train mode, dropout 0).
    attn<I>.sd.<key>, .query/.key/.value (or .src), masks (.attn_mask bool: True = masked,
    .attn_bias float, .key_padding_mask bool), .out, .weights, .upstream (for out),
    .grad.<param>, .grad_query/.grad_key/.grad_value (.grad_src)."""
    specs = [
        ("mha_seq_first", dict(E=8, H=2, batch_first=False), (5, 3), 4, {}),
        ("mha_batch_first_masks", dict(E=8, H=4, batch_first=True), (3, 5), 6,
         {"attn_mask": True, "key_padding_mask": True}),
        ("mha_bias_per_head_unaveraged", dict(E=6, H=3, batch_first=True, bias=False), (2, 4), 4,
         {"attn_bias": True, "average": False}),
        ("mha_unbatched", dict(E=4, H=1, batch_first=False), (5,), 3, {}),
        ("encoder_post_norm", dict(d=8, nhead=2, ff=16, norm_first=False, act="relu", batch_first=False), (5, 3), None, {}),
        ("encoder_pre_norm_gelu", dict(d=8, nhead=4, ff=12, norm_first=True, act="gelu", batch_first=True), (2, 6), None,
         {"key_padding_mask": True}),
    ]
    count = 0
    for i, (name, a, lead, S, extra) in enumerate(specs):
        torch.manual_seed(100 + i)
        if name.startswith("mha"):
            m32 = nn.MultiheadAttention(a["E"], a["H"], bias=a.get("bias", True), batch_first=a["batch_first"])
            m = nn.MultiheadAttention(a["E"], a["H"], bias=a.get("bias", True), batch_first=a["batch_first"]).double()
            E = a["E"]
        else:
            kw = dict(dim_feedforward=a["ff"], dropout=0.0, activation=a["act"], batch_first=a["batch_first"],
                      norm_first=a["norm_first"])
            m32 = nn.TransformerEncoderLayer(a["d"], a["nhead"], **kw)
            m = nn.TransformerEncoderLayer(a["d"], a["nhead"], **kw).double()
            E = a["d"]
        with torch.no_grad():
            for k, v in m.state_dict().items():
                v.copy_(torch.from_numpy(rng.standard_normal(v.shape) * 0.5))
        m.train()
        p = f"attn{count}."
        for k, v in m.state_dict().items():
            tensors[p + "sd." + k] = v.clone().numpy()
        L = lead[0] if (a.get("batch_first") is False or len(lead) == 1) else lead[1]
        N = None if len(lead) == 1 else (lead[1] if not a.get("batch_first") else lead[0])
        def shaped(length):
            if N is None:
                return (length, E)
            return (N, length, E) if a["batch_first"] else (length, N, E)
        params = dict(m.named_parameters())
        if name.startswith("mha"):
            q = torch.from_numpy(rng.standard_normal(shaped(L))).requires_grad_()
            k = torch.from_numpy(rng.standard_normal(shaped(S))).requires_grad_()
            v = torch.from_numpy(rng.standard_normal(shaped(S))).requires_grad_()
            kwargs = {"average_attn_weights": extra.get("average", True)}
            if extra.get("attn_mask"):
                am = torch.from_numpy(rng.random((L, S)) < 0.3)
                am[:, 0] = False
                kwargs["attn_mask"] = am
                tensors[p + "attn_mask"] = am.numpy()
            if extra.get("attn_bias"):
                ab = torch.from_numpy(rng.standard_normal((N * a["H"], L, S)))
                kwargs["attn_mask"] = ab
                tensors[p + "attn_bias"] = ab.numpy()
            if extra.get("key_padding_mask"):
                kp = torch.from_numpy(rng.random((N, S)) < 0.3)
                kp[:, 1] = False
                kwargs["key_padding_mask"] = kp
                tensors[p + "key_padding_mask"] = kp.numpy()
            out, w = m(q, k, v, **kwargs)
            inputs = {"query": q, "key": k, "value": v}
            tensors[p + "weights"] = w.detach().numpy()
        else:
            src = torch.from_numpy(rng.standard_normal(shaped(L))).requires_grad_()
            kwargs = {}
            if extra.get("key_padding_mask"):
                kp = torch.from_numpy(rng.random((N, L)) < 0.3)
                kp[:, 0] = False
                kwargs["src_key_padding_mask"] = kp
                tensors[p + "key_padding_mask"] = kp.numpy()
            out = m(src, **kwargs)
            inputs = {"src": src}
        up = torch.from_numpy(rng.standard_normal(tuple(out.shape)))
        grads = torch.autograd.grad((out * up).sum(), list(params.values()) + list(inputs.values()))
        for kname, t in inputs.items():
            tensors[p + kname] = t.detach().numpy()
        tensors[p + "out"] = out.detach().numpy()
        tensors[p + "upstream"] = up.numpy()
        for (kname, _), g in zip(params.items(), grads):
            tensors[p + "grad." + kname] = g.numpy()
        for kname, g in zip(inputs, grads[len(params):]):
            tensors[p + "grad_" + kname] = g.numpy()
        meta[f"attn{count}"] = json.dumps({"module": name, "repr": repr(m32), "keys": list(m.state_dict().keys())})
        count += 1
    meta["num_attn_cases"] = str(count)


def main():
    rng = np.random.default_rng(zlib.crc32(b"ember-nn-modules"))
    tensors, meta = {}, {}
    n = 0
    for i, (name, mode, make, in_shape) in enumerate(cases()):
        torch.manual_seed(i)
        m32 = make()
        m = make().double()
        # random state (parameters and buffers), so that every entry matters
        with torch.no_grad():
            for k, v in m.state_dict().items():
                if v.dtype == torch.int64:
                    v.fill_(3)
                elif "running_var" in k:
                    v.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, v.shape)))
                else:
                    v.copy_(torch.from_numpy(rng.standard_normal(v.shape)))
        sd = {k: v.clone() for k, v in m.state_dict().items()}
        if mode == "train":
            m.train()
        else:
            m.eval()
        if name == "embedding":
            x = torch.from_numpy(rng.integers(0, 10, (2, 3))).to(torch.int64)
            x[0, 0] = 0
        else:
            x = torch.from_numpy(rng.standard_normal(in_shape)).requires_grad_()
        out = m(x)
        up = torch.from_numpy(rng.standard_normal(tuple(out.shape)))
        params = dict(m.named_parameters())
        inputs = list(params.values()) + ([x] if x.dtype == torch.float64 else [])
        grads = torch.autograd.grad((out * up).sum(), inputs)
        p = f"case{n}."
        for k, v in sd.items():
            tensors[p + "sd." + k] = v.numpy()
        tensors[p + "in"] = x.detach().numpy()
        tensors[p + "out"] = out.detach().numpy()
        tensors[p + "upstream"] = up.numpy()
        for (k, _), g in zip(params.items(), grads):
            tensors[p + "grad." + k] = g.numpy()
        if x.dtype == torch.float64:
            tensors[p + "grad_in"] = grads[-1].numpy()
        for k, v in m.named_buffers():
            tensors[p + "after." + k] = v.detach().numpy()
        meta[f"case{n}"] = json.dumps({"module": name, "mode": mode, "repr": repr(m32),
                                     "keys": list(sd.keys())})
        n += 1
    meta["num_cases"] = str(n)
    attention_cases(rng, tensors, meta)
    meta["torch_version"] = torch.__version__
    out_path = os.path.join(HERE, "..", "data", "nn", "modules.safetensors")
    safetensors_io.save_file(tensors, out_path, metadata=meta)
    print(f"wrote {n} cases to {os.path.normpath(out_path)} ({os.path.getsize(out_path)} bytes)")


if __name__ == "__main__":
    main()
