#!/usr/bin/env python3
"""Golden values for optimizer state_dicts, lr schedulers and gradient clipping.

Writes, under test/data/optim_extra/:
  optim_state_dict.safetensors  (test/optim/state_dict.cpp)
      problem.X (6, 3), problem.Y (6, 2), problem.w (2, 3), problem.b (2), problem.c (2) in f64;
      for each optimizer config <k>: the PyTorch state_dict after 2 steps of
      mse_loss(linear(X, w, b), Y) with groups [w] and [b, c] (c never gets a gradient), flattened
      as "<k>.state.<i>.<name>" and "<k>.param_groups.<g>.<option>" (floats f64, bools BOOL, the
      float32 'step' tensors as I64, betas as (2) f64, params as I64); metadata "config.<k>" =
      JSON {"optimizer", "defaults", "group1"} and "keys.<k>" = the flattened keys, comma-joined.
  lr_scheduler.safetensors  (test/optim/lr_scheduler.cpp)
      metadata "case.<k>" = JSON {"scheduler", "options", "optimizer", "optimizer_options",
      "lrs", "initial_lrs" (or null), "steps"}; tensors "<k>.lr" (steps + 1, groups): the lrs
      after construction and after each step; "<k>.momentum" (one_cycle with cycle_momentum:
      momentum or beta1 after construction and each step); "<k>.metrics" (steps) for
      ReduceLROnPlateau; "traj.*": SGD with momentum and StepLR on a quadratic.
  clip_grad.safetensors  (test/nn/clip_grad.cpp)
      "input.<dt>.grad.<k>" gradients of four parameters (the fourth has none); for each case
      <c>: "<c>.total" (0-d) and "<c>.grad.<k>" after clipping; metadata "case.<c>" = JSON
      {"fn", "dtype", "max_norm" | "clip_value", "norm_type", "params"}.

Run with Debian's python (python3-torch 1.13, python3-numpy):
    /usr/bin/python3 test/tools/gen_optim_extra.py
Deterministic: reruns write identical bytes. The lrs are PyTorch's own float arithmetic (the
chainable forms, so the tests check the recursion, not a closed form); gradients for the
trajectory are set explicitly (grad = 2 c (w - t)) so the C++ side can form the same values.
"""
import json
import math
import os
import struct
import zlib

import numpy as np
import torch
import torch.nn.functional as F

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "optim_extra")

TAGS = {np.dtype("float64"): "F64", np.dtype("float32"): "F32", np.dtype("int64"): "I64",
        np.dtype("bool"): "BOOL"}


def save_safetensors(tensors, metadata, path):
    """Minimal safetensors writer (the layout of shared/tools/safetensors_io.py): tensors sorted
    by (item size descending, name), no gaps, compact JSON, header padded to 8 bytes."""
    prepared = []
    for name, a in tensors.items():
        a = np.array(a, order="C", copy=True)
        prepared.append((name, a.astype(a.dtype.newbyteorder("<"))))
    prepared.sort(key=lambda t: (-t[1].dtype.itemsize, t[0]))
    header, blobs, offset = {"__metadata__": dict(sorted(metadata.items()))}, [], 0
    for name, a in prepared:
        raw = a.tobytes(order="C")
        header[name] = {"dtype": TAGS[np.dtype(a.dtype.name)],
                        "shape": [int(d) for d in a.shape],
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def rng_for(name):
    return np.random.default_rng(zlib.crc32(("ember-optim-extra/" + name).encode()))


def as_np(v):
    if isinstance(v, torch.Tensor):
        v = v.detach()
        if v.dtype == torch.float32 or v.dtype == torch.float64:
            return v.numpy().astype(np.float64)
        return v.numpy()
    if isinstance(v, bool):
        return np.array(v, dtype=np.bool_)
    if isinstance(v, int):
        return np.array(v, dtype=np.int64)
    if isinstance(v, float):
        return np.array(v, dtype=np.float64)
    if isinstance(v, (tuple, list)):
        if all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            return np.array(v, dtype=np.int64)
        return np.array(v, dtype=np.float64)
    raise TypeError(type(v))


# ---- optimizer state_dicts -----------------------------------------------------------------
IGNORED_GROUP_KEYS = {"foreach", "capturable", "differentiable", "fused"}


def optimizer_state_dicts():
    tensors, metadata = {}, {}
    r = rng_for("problem")
    X = r.standard_normal((6, 3))
    Y = r.standard_normal((6, 2))
    w0 = r.standard_normal((2, 3))
    b0 = r.standard_normal(2)
    c0 = r.standard_normal(2)
    for name, a in (("X", X), ("Y", Y), ("w", w0), ("b", b0), ("c", c0)):
        tensors["problem." + name] = a
    configs = {
        "sgd": ("SGD", {"lr": 0.1}, {"lr": 0.05}),
        "sgd_momentum": ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
                         {"lr": 0.05, "momentum": 0.5, "dampening": 0.0, "nesterov": True}),
        "adam": ("Adam", {"lr": 0.01}, {"lr": 0.02, "betas": [0.8, 0.99], "weight_decay": 0.1}),
        "adam_amsgrad": ("Adam", {"lr": 0.01, "amsgrad": True}, {"lr": 0.001, "maximize": True}),
        "adamw": ("AdamW", {"lr": 0.01}, {"amsgrad": True}),
        "rmsprop": ("RMSprop", {"lr": 0.01}, {"momentum": 0.9, "centered": True}),
        "rmsprop_centered": ("RMSprop", {"lr": 0.01, "centered": True, "weight_decay": 0.1},
                             {"momentum": 0.5}),
        "adagrad": ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1},
                    {"lr": 0.05, "weight_decay": 0.1}),
    }
    for key, (cls, defaults, group1) in configs.items():
        w = torch.tensor(w0, requires_grad=True)
        b = torch.tensor(b0, requires_grad=True)
        c = torch.tensor(c0, requires_grad=True)
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in defaults.items()}
        g1 = {k: (tuple(v) if isinstance(v, list) else v) for k, v in group1.items()}
        opt = getattr(torch.optim, cls)([{"params": [w]}, dict(params=[b, c], **g1)], **kw)
        Xt, Yt = torch.tensor(X), torch.tensor(Y)
        for _ in range(2):
            opt.zero_grad()
            F.mse_loss(F.linear(Xt, w, b), Yt).backward()
            opt.step()
        sd = opt.state_dict()
        keys = []
        for i, st in sd["state"].items():
            for name, v in st.items():
                if v is None:
                    continue
                k = f"state.{i}.{name}"
                keys.append(k)
                a = as_np(v)
                if name == "step":
                    a = np.array(int(a), dtype=np.int64)
                tensors[f"{key}.{k}"] = a
        for g, group in enumerate(sd["param_groups"]):
            for name, v in group.items():
                if name in IGNORED_GROUP_KEYS:
                    continue
                k = f"param_groups.{g}.{name}"
                keys.append(k)
                if isinstance(v, int) and not isinstance(v, bool) and name != "params":
                    v = float(v)  # PyTorch's integer defaults (SGD's dampening=0) are numbers
                tensors[f"{key}.{k}"] = as_np(v)
        metadata[f"config.{key}"] = json.dumps(
            {"optimizer": cls, "defaults": defaults, "group1": group1}, sort_keys=True)
        metadata[f"keys.{key}"] = ",".join(keys)
    return tensors, metadata


# ---- lr schedulers -------------------------------------------------------------------------
def make_optimizer(kind, lrs, options):
    params = [torch.zeros(2, requires_grad=True) for _ in lrs]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, lrs)]
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad,
           "rmsprop": torch.optim.RMSprop}[kind]
    return cls(groups, **options)


def momentum_of(opt):
    if "betas" in opt.defaults:
        return [g["betas"][0] for g in opt.param_groups]
    return [g["momentum"] for g in opt.param_groups]


def scheduler_cases():
    tensors, metadata = {}, {}
    S = torch.optim.lr_scheduler

    def run(key, scheduler, options, steps, optimizer="sgd", optimizer_options=None,
            lrs=(0.1, 0.05), initial_lrs=None, metrics=None):
        opt = make_optimizer(optimizer, lrs, optimizer_options or {})
        if initial_lrs is not None:
            for g, v in zip(opt.param_groups, initial_lrs):
                g["initial_lr"] = v
        kw = dict(options)
        cycle = False
        if scheduler == "step_lr":
            sched = S.StepLR(opt, **kw)
        elif scheduler == "multi_step_lr":
            sched = S.MultiStepLR(opt, **kw)
        elif scheduler == "exponential_lr":
            sched = S.ExponentialLR(opt, **kw)
        elif scheduler == "cosine_annealing_lr":
            kw = {("T_max" if k == "t_max" else k): v for k, v in kw.items()}
            sched = S.CosineAnnealingLR(opt, **kw)
        elif scheduler == "one_cycle_lr":
            kw = {k: (list(v) if isinstance(v, list) else v) for k, v in kw.items()}
            sched = S.OneCycleLR(opt, **kw)
            cycle = kw.get("cycle_momentum", True)
        elif scheduler == "reduce_lr_on_plateau":
            sched = S.ReduceLROnPlateau(opt, **kw)
        else:
            raise ValueError(scheduler)
        lr_rows = [[g["lr"] for g in opt.param_groups]]
        mom_rows = [momentum_of(opt)] if cycle else None
        for k in range(steps):
            opt.step()  # no gradients: a no-op, but the order PyTorch expects
            if metrics is not None:
                sched.step(float(metrics[k]))
            else:
                sched.step()
            lr_rows.append([g["lr"] for g in opt.param_groups])
            if cycle:
                mom_rows.append(momentum_of(opt))
        tensors[f"{key}.lr"] = np.array(lr_rows, dtype=np.float64)
        if cycle:
            tensors[f"{key}.momentum"] = np.array(mom_rows, dtype=np.float64)
        if metrics is not None:
            tensors[f"{key}.metrics"] = np.array(metrics, dtype=np.float64)
        metadata[f"case.{key}"] = json.dumps(
            {"scheduler": scheduler, "options": options, "optimizer": optimizer,
             "optimizer_options": optimizer_options or {}, "lrs": list(lrs),
             "initial_lrs": initial_lrs, "steps": steps}, sort_keys=True)

    run("step_lr_a", "step_lr", {"step_size": 3, "gamma": 0.5}, 30)
    run("step_lr_b", "step_lr", {"step_size": 7}, 30, lrs=(0.3, 0.007))
    run("step_lr_resume", "step_lr", {"step_size": 4, "gamma": 0.5, "last_epoch": 5}, 20,
        initial_lrs=[0.2, 0.1])
    run("multi_step_lr_a", "multi_step_lr", {"milestones": [2, 5, 5, 11, 20], "gamma": 0.3}, 30)
    run("multi_step_lr_b", "multi_step_lr", {"milestones": [25, 4]}, 30)
    run("exponential_lr_a", "exponential_lr", {"gamma": 0.9}, 30)
    run("exponential_lr_b", "exponential_lr", {"gamma": 0.97}, 30, lrs=(1.0, 0.3))
    run("cosine_a", "cosine_annealing_lr", {"t_max": 10}, 30)
    run("cosine_b", "cosine_annealing_lr", {"t_max": 7, "eta_min": 0.01}, 30)
    run("cosine_c", "cosine_annealing_lr", {"t_max": 1, "eta_min": 0.001}, 30)
    run("cosine_d", "cosine_annealing_lr", {"t_max": 3, "eta_min": 0.02}, 30, lrs=(0.5, 0.1))
    run("cosine_resume", "cosine_annealing_lr", {"t_max": 12, "last_epoch": 4}, 30,
        initial_lrs=[0.2, 0.1])
    run("one_cycle_a", "one_cycle_lr", {"max_lr": 1.0, "total_steps": 30}, 30,
        optimizer_options={"momentum": 0.9})
    run("one_cycle_b", "one_cycle_lr",
        {"max_lr": [0.5, 0.2], "total_steps": 25, "pct_start": 0.25, "anneal_strategy": "linear",
         "three_phase": True, "div_factor": 10.0, "final_div_factor": 100.0,
         "base_momentum": [0.8, 0.85], "max_momentum": 0.9}, 25, optimizer="adam")
    run("one_cycle_c", "one_cycle_lr",
        {"max_lr": 0.4, "epochs": 3, "steps_per_epoch": 8, "pct_start": 0.4,
         "cycle_momentum": False}, 24, optimizer="adagrad")
    run("one_cycle_d", "one_cycle_lr",
        {"max_lr": [0.3, 0.6], "total_steps": 20, "three_phase": True}, 20,
        optimizer="rmsprop", optimizer_options={"momentum": 0.5})
    run("one_cycle_e", "one_cycle_lr", {"max_lr": 0.1, "total_steps": 7, "pct_start": 0.5}, 7,
        optimizer="sgd")

    # metrics: a noisy decreasing curve with plateaus
    m = [1.0 / (1.0 + 0.3 * k) + 0.05 * math.sin(1.7 * k) for k in range(40)]
    m[20:26] = [m[19]] * 6
    run("plateau_a", "reduce_lr_on_plateau",
        {"mode": "min", "factor": 0.5, "patience": 2, "threshold": 0.01, "cooldown": 1,
         "min_lr": [0.001, 0.02]}, 40, metrics=m)
    run("plateau_b", "reduce_lr_on_plateau",
        {"mode": "max", "factor": 0.3, "patience": 1, "threshold": 0.05, "threshold_mode": "abs",
         "eps": 0.01}, 40, metrics=[-v for v in m])
    run("plateau_c", "reduce_lr_on_plateau", {}, 40, metrics=m)
    run("plateau_d", "reduce_lr_on_plateau",
        {"mode": "min", "factor": 0.1, "patience": 0, "threshold": 0.0, "threshold_mode": "abs",
         "min_lr": 0.0004}, 40, metrics=[float(k % 5) for k in range(40)])

    # SGD with momentum and StepLR on sum(c (w - t)^2), two groups
    r = rng_for("trajectory")
    w0 = [r.standard_normal(3), r.standard_normal(2)]
    cs = [r.uniform(0.5, 2.0, 3), r.uniform(0.5, 2.0, 2)]
    ts = [r.standard_normal(3), r.standard_normal(2)]
    ws = [torch.tensor(a, requires_grad=True) for a in w0]
    opt = torch.optim.SGD([{"params": [ws[0]], "lr": 0.1}, {"params": [ws[1]], "lr": 0.05}],
                          momentum=0.9)
    sched = S.StepLR(opt, step_size=3, gamma=0.5)
    rows = [[w.detach().numpy().copy()] for w in ws]
    for _ in range(12):
        with torch.no_grad():
            for w, c, t in zip(ws, cs, ts):
                w.grad = 2.0 * torch.tensor(c) * (w - torch.tensor(t))
        opt.step()
        sched.step()
        for row, w in zip(rows, ws):
            row.append(w.detach().numpy().copy())
    for i in range(2):
        tensors[f"traj.w{i}.init"] = w0[i]
        tensors[f"traj.c{i}"] = cs[i]
        tensors[f"traj.t{i}"] = ts[i]
        tensors[f"traj.w{i}"] = np.array(rows[i])
    return tensors, metadata


# ---- gradient clipping ---------------------------------------------------------------------
def clip_cases():
    tensors, metadata = {}, {}
    r = rng_for("clip")
    shapes = [(3, 4), (5,), (2, 2), (3,)]
    grads64 = [r.standard_normal(s) * 0.7 for s in shapes[:3]]
    for dt, np_t, torch_t in (("f64", np.float64, torch.float64), ("f32", np.float32, torch.float32)):
        for k, g in enumerate(grads64):
            tensors[f"input.{dt}.grad.{k}"] = g.astype(np_t)
    U = torch.nn.utils

    def params(dt, grads=None):
        np_t = np.float64 if dt == "f64" else np.float32
        ps = [torch.zeros(s, dtype=torch.float64 if dt == "f64" else torch.float32,
                          requires_grad=True) for s in shapes]
        src = grads if grads is not None else [tensors[f"input.{dt}.grad.{k}"] for k in range(3)]
        for p, g in zip(ps[:3], src):
            p.grad = torch.tensor(np.asarray(g, dtype=np_t))
        return ps

    def record(key, info, ps, total):
        metadata[f"case.{key}"] = json.dumps(info, sort_keys=True)
        np_t = np.float64 if info["dtype"] == "f64" else np.float32
        if total is not None:
            tensors[f"{key}.total"] = np.array(total.item(), dtype=np_t)
        for k, p in enumerate(ps[:3]):
            tensors[f"{key}.grad.{k}"] = p.grad.numpy().astype(np_t)

    cases = [("l2_clip", 2.0, 0.5), ("l2_noclip", 2.0, 100.0), ("l1", 1.0, 1.5),
             ("inf", math.inf, 0.4), ("p3", 3.0, 0.8), ("p05", 0.5, 2.0), ("p0", 0.0, 5.0),
             ("neg_inf", -math.inf, 0.01)]
    for dt in ("f64", "f32"):
        for name, norm_type, max_norm in cases:
            ps = params(dt)
            total = U.clip_grad_norm_(ps, max_norm, norm_type)
            record(f"{name}_{dt}", {"fn": "clip_grad_norm_", "dtype": dt, "max_norm": max_norm,
                                    "norm_type": "inf" if norm_type == math.inf else
                                    "-inf" if norm_type == -math.inf else norm_type}, ps, total)
        ps = params(dt)
        U.clip_grad_value_(ps, 0.3)
        record(f"value_{dt}", {"fn": "clip_grad_value_", "dtype": dt, "clip_value": 0.3}, ps, None)
    # one tensor (not a list); a non-finite gradient scales everything by 0 (inf * 0 = nan)
    p = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    p.grad = torch.tensor(tensors["input.f64.grad.0"])
    total = U.clip_grad_norm_(p, 0.5)
    metadata["case.single_f64"] = json.dumps({"fn": "clip_grad_norm_", "dtype": "f64",
                                              "max_norm": 0.5, "norm_type": 2.0}, sort_keys=True)
    tensors["single_f64.total"] = np.array(total.item())
    tensors["single_f64.grad.0"] = p.grad.numpy().copy()
    bad = [g.copy() for g in grads64]
    bad[1][2] = math.inf
    tensors["input.f64.nonfinite.1"] = bad[1]
    ps = params("f64", bad)
    total = U.clip_grad_norm_(ps, 0.5)
    record("nonfinite_f64", {"fn": "clip_grad_norm_", "dtype": "f64", "max_norm": 0.5,
                             "norm_type": 2.0}, ps, total)
    return tensors, metadata


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    torch.set_default_dtype(torch.float64)
    for name, fn in (("optim_state_dict", optimizer_state_dicts), ("lr_scheduler", scheduler_cases),
                     ("clip_grad", clip_cases)):
        tensors, metadata = fn()
        metadata["generator"] = "test/tools/gen_optim_extra.py"
        metadata["torch"] = torch.__version__
        path = os.path.join(OUT_DIR, name + ".safetensors")
        save_safetensors(tensors, metadata, path)
        print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
