#!/usr/bin/env python3
"""torch.save fixtures for ember::io::load_pt (read by test/io/pt.cpp, seeds of test/fuzz/pt.cpp).

Run with Debian's python3 (torch 1.13 from python3-torch, numpy):

    /usr/bin/python3 test/tools/gen_pt_cases.py

Writes test/data/pt/:
  dtypes.pt            every storage type, 0-d, empty, a transposed (non-contiguous) tensor, a
                       base and two views of its storage (one strided, one with an offset)
  dtypes_proto4.pt     the same tensors saved with pickle_protocol=4 (FRAME, STACK_GLOBAL, MEMOIZE)
  dtypes_expected.safetensors   their values (contiguous) and, as metadata, torch's strides
                       `stride:<key>`, offsets `offset:<key>` and storage sharing `shares:<key>`
  batchnorm.pt         state_dict of Linear + BatchNorm1d after one training step
                       (num_batches_tracked: int64 0-d)
  batchnorm_zip64.pt   the same entries rewritten with ZIP64 records everywhere, 64-byte aligned
                       data (padding in local extra fields, as torch 2.x) and byteorder "little"
  batchnorm_expected.safetensors
  nested.pt            {'model': state_dict, 'epoch', 'lr', 'name', 'flag', 'none', 'param':
                       nn.Parameter, 'pair': [t, t2], 'typed': _rebuild_from_type_v2 tensor}
  nested_expected.safetensors   flattened keys; metadata `meta:<key>` = what load_pt puts in
                       state_dict::metadata() (Python's str/repr of the scalar)
Hostile files (valid zips unless said otherwise), each must be an ember::error (io):
  os_system.pt         data.pkl is GLOBAL 'os system' + REDUCE (never executed here)
  unknown_opcode.pt    opcode 0xff
  short_storage.pt     a storage claiming 100 floats in a 16-byte entry
  out_of_range.pt      a (4,4) view of a 12-element storage
  negative_stride.pt   stride (-1,)
  missing_storage.pt   a persistent id naming an absent entry
  recursive.pt         a list that contains itself
  shared_bomb.pt       30 nested lists each holding the next one twice (2^30 paths)
  deflated.pt          data.pkl compressed (method 8)
  big_endian.pt        byteorder "big"
And cuda_location.pt: a float32 [1.5, -2.0, 4.25] whose storage location is "cuda:0" (loads to CPU).
Valid torch files that are not state_dict checkpoints (errc::not_implemented):
  bare_tensor.pt       torch.save(tensor)
  legacy.pt            the start of a _use_new_zipfile_serialization=False (pre-1.6) file
And test/fuzz/corpus/pt/: copies of the valid .pt files and their bare data.pkl.
Deterministic: fixed seeds and zip timestamps; reruns give identical bytes.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import struct
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "data" / "pt"
CORPUS = ROOT / "fuzz" / "corpus" / "pt"

TAGS = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
        torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
        torch.uint8: "U8", torch.bool: "BOOL"}


def raw_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)  # numpy has no bfloat16; same bits
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()


def save_safetensors(tensors: dict, path: Path, metadata: dict) -> None:
    """Minimal safetensors writer: larger items first, then by name; no gaps."""
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header, blobs, pos = {"__metadata__": metadata}, [], 0
    for k in order:
        b = raw_bytes(tensors[k])
        header[k] = {"dtype": TAGS[tensors[k].dtype], "shape": list(tensors[k].shape),
                     "data_offsets": [pos, pos + len(b)]}
        blobs.append(b)
        pos += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (len(h) + 8) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def write_zip(path: Path, entries: list, zip64: bool = False, align: int = 0,
              deflate: tuple = ()) -> None:
    """A zip writer with the knobs zipfile lacks: ZIP64 records for every entry (sizes and offsets
    set to 0xffffffff, the values in extra fields, ZIP64 end record and locator), alignment
    padding in the local extra field (id 'FB', as PyTorch's writer), deflated entries by name."""
    out, cd = bytearray(), bytearray()
    for name, data in entries:
        nb, crc, method, payload = name.encode(), zlib.crc32(data), 0, data
        if name in deflate:
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            method, payload = 8, c.compress(data) + c.flush()
        off = len(out)
        extra = struct.pack("<HHQQ", 1, 16, len(data), len(payload)) if zip64 else b""
        if align:
            pad = (-(off + 30 + len(nb) + len(extra) + 4)) % align
            extra += struct.pack("<HH", 0x4246, pad) + b"Z" * pad
        usize, csize = (0xFFFFFFFF, 0xFFFFFFFF) if zip64 else (len(data), len(payload))
        version = 45 if zip64 else 20
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, version, 0, method, 0, 0x21, crc, csize,
                           usize, len(nb), len(extra)) + nb + extra + payload
        cd_extra = struct.pack("<HHQQQ", 1, 24, len(data), len(payload), off) if zip64 else b""
        cd += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, version, version, 0, method, 0, 0x21,
                          crc, csize, usize, len(nb), len(cd_extra), 0, 0, 0, 0,
                          0xFFFFFFFF if zip64 else off) + nb + cd_extra
    cd_off, n = len(out), len(entries)
    out += cd
    if zip64:
        z = len(out)
        out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(cd), cd_off)
        out += struct.pack("<IIQI", 0x07064B50, 0, z, 1)
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    else:
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(cd), cd_off, 0)
    path.write_bytes(bytes(out))


def entries_of(path: Path) -> list:
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


# ---- torch-like pickles with arbitrary (lying) contents ---------------------------------------
class StorageRef:
    """Pickled as torch's persistent id ('storage', type, key, location, numel)."""

    def __init__(self, storage_type, key: str, numel: int, location: str = "cpu"):
        self.storage_type, self.key, self.numel, self.location = storage_type, key, numel, location


class Rebuild:
    """Pickled as REDUCE(torch._utils._rebuild_tensor_v2, args)."""

    def __init__(self, *args):
        self.args = args

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class TorchLikePickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, StorageRef):
            return ("storage", obj.storage_type, obj.key, obj.location, obj.numel)
        return None


def fake_pt(name: str, tensors: dict, storages: dict) -> None:
    buf = io.BytesIO()
    TorchLikePickler(buf, protocol=2).dump(OrderedDict(tensors))
    entries = [(f"{name}/data.pkl", buf.getvalue())]
    entries += [(f"{name}/data/{k}", v) for k, v in storages.items()]
    entries.append((f"{name}/version", b"3\n"))
    write_zip(OUT / f"{name}.pt", entries)


class TypedTensor:
    """Pickled as torch >= 2.0 pickles a tensor with Python attributes:
    _rebuild_from_type_v2(_rebuild_tensor_v2, torch.Tensor, args, {'note': ...})."""

    def __init__(self, t: torch.Tensor):
        self.t = t

    def __reduce_ex__(self, proto):
        func, args = self.t._reduce_ex_internal(proto)
        return (torch._tensor._rebuild_from_type_v2, (func, torch.Tensor, args, {"note": "kept"}))


def dtypes_case() -> None:
    g = torch.Generator().manual_seed(7)
    f = torch.randn(2, 3, generator=g)
    d = {
        "f32": f,
        "f64": torch.randn(2, 3, generator=g, dtype=torch.float64),
        "f16": torch.randn(2, 3, generator=g).half(),
        "bf16": torch.randn(2, 3, generator=g).bfloat16(),
        "i64": torch.tensor([[-(2**62), 3, -1], [7, 2**40, 0]], dtype=torch.int64),
        "i32": torch.tensor([-(2**31), 2**31 - 1, 5], dtype=torch.int32),
        "i16": torch.tensor([-32768, 32767, -2], dtype=torch.int16),
        "i8": torch.tensor([-128, 127, 1, -1], dtype=torch.int8),
        "u8": torch.tensor([0, 255, 17], dtype=torch.uint8),
        "bool": torch.tensor([[True, False], [False, True]]),
        "scalar_f32": torch.tensor(2.5),
        "scalar_i64": torch.tensor(-9, dtype=torch.int64),
        "empty": torch.zeros(0, 3),
        "transposed": torch.randn(3, 4, generator=g, dtype=torch.float64).t(),
    }
    base = torch.arange(20, dtype=torch.float32).reshape(4, 5)
    d["base"] = base
    d["view_offset"] = base[1:3, 2:]      # offset 7, strides (5, 1)
    d["view_strided"] = base[:, ::2]       # strides (5, 2)
    torch.save(d, OUT / "dtypes.pt")
    torch.save(d, OUT / "dtypes_proto4.pt", pickle_protocol=4)
    meta = {}
    for k, t in d.items():
        meta[f"stride:{k}"] = json.dumps(list(t.stride()))
        meta[f"offset:{k}"] = str(t.storage_offset())
    meta["shares:view_offset"] = meta["shares:view_strided"] = "base"
    meta["keys"] = json.dumps(list(d.keys()))
    save_safetensors(d, OUT / "dtypes_expected.safetensors", meta)


def batchnorm_case() -> None:
    torch.manual_seed(3)
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    m.train()
    m(torch.randn(5, 3))  # running stats and num_batches_tracked move
    sd = m.state_dict()
    torch.save(sd, OUT / "batchnorm.pt")
    save_safetensors(dict(sd), OUT / "batchnorm_expected.safetensors",
                     {"keys": json.dumps(list(sd.keys()))})
    entries = [(n.replace("batchnorm/", "batchnorm_zip64/"), b)
               for n, b in entries_of(OUT / "batchnorm.pt")]
    entries.insert(1, ("batchnorm_zip64/byteorder", b"little"))
    write_zip(OUT / "batchnorm_zip64.pt", entries, zip64=True, align=64)
    big = [(n.replace("batchnorm/", "big_endian/"), b) for n, b in entries_of(OUT / "batchnorm.pt")]
    big.insert(1, ("big_endian/byteorder", b"big"))
    write_zip(OUT / "big_endian.pt", big)
    defl = [(n.replace("batchnorm/", "deflated/"), b) for n, b in entries_of(OUT / "batchnorm.pt")]
    write_zip(OUT / "deflated.pt", defl, deflate=("deflated/data.pkl",))


def nested_case() -> None:
    torch.manual_seed(4)
    model = nn.Linear(2, 2)
    t = torch.tensor([1.0, -2.0])
    t2 = torch.tensor([[3, 4]], dtype=torch.int32)
    typed = torch.tensor([0.5, 0.25, 0.125])
    obj = {"model": model.state_dict(), "epoch": 3, "lr": 0.001, "name": "mlp", "flag": True,
           "none": None, "param": nn.Parameter(torch.tensor([6.0, 7.0])), "pair": [t, t2],
           "typed": TypedTensor(typed)}
    torch.save(obj, OUT / "nested.pt")
    expected = {f"model.{k}": v for k, v in model.state_dict().items()}
    expected.update({"param": obj["param"].detach(), "pair.0": t, "pair.1": t2, "typed": typed})
    meta = {f"meta:{k}": (v if isinstance(v, str) else repr(v))
            for k, v in obj.items() if k in ("epoch", "lr", "name", "flag", "none")}
    meta["keys"] = json.dumps(["model.weight", "model.bias", "param", "pair.0", "pair.1", "typed"])
    save_safetensors(expected, OUT / "nested_expected.safetensors", meta)


def hostile_cases() -> None:
    # GLOBAL 'os system', ('echo pwned',), REDUCE: written byte by byte (pickling os.system
    # itself would name 'posix system'); it is never unpickled here.
    evil = (b"\x80\x02cos\nsystem\nq\x00X\n\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03.")
    write_zip(OUT / "os_system.pt", [("os_system/data.pkl", evil), ("os_system/version", b"3\n")])
    write_zip(OUT / "unknown_opcode.pt", [("unknown_opcode/data.pkl", b"\x80\x02}q\x00\xff."),
                                          ("unknown_opcode/version", b"3\n")])
    hooks = OrderedDict()
    fake_pt("short_storage",
            {"w": Rebuild(StorageRef(torch.FloatStorage, "0", 100), 0, (10, 10), (10, 1), False, hooks)},
            {"0": bytes(16)})
    fake_pt("out_of_range",
            {"w": Rebuild(StorageRef(torch.FloatStorage, "0", 12), 0, (4, 4), (4, 1), False, hooks)},
            {"0": bytes(48)})
    fake_pt("negative_stride",
            {"w": Rebuild(StorageRef(torch.FloatStorage, "0", 3), 2, (3,), (-1,), False, hooks)},
            {"0": bytes(12)})
    fake_pt("missing_storage",
            {"w": Rebuild(StorageRef(torch.FloatStorage, "7", 3), 0, (3,), (1,), False, hooks)},
            {"0": bytes(12)})
    # not hostile: a tensor saved from a GPU (location "cuda:0") loads to the CPU
    fake_pt("cuda_location",
            {"w": Rebuild(StorageRef(torch.FloatStorage, "0", 3, "cuda:0"), 0, (3,), (1,), False, hooks)},
            {"0": np.array([1.5, -2.0, 4.25], dtype="<f4").tobytes()})
    loop: list = []
    loop.append(loop)
    fake_pt("recursive", {"loop": loop}, {})
    bomb: list = []
    for _ in range(30):  # 2^30 paths through 30 shared lists (memoized: a few hundred bytes)
        bomb = [bomb, bomb]
    fake_pt("shared_bomb", {"bomb": bomb}, {})
    # Valid torch files load_pt does not read (errc::not_implemented, not io):
    torch.save(torch.tensor([1.0, 2.0]), OUT / "bare_tensor.pt")
    # the legacy format's opening pickles (magic number, protocol version, sys_info) as
    # torch.serialization._legacy_save writes them; its storage keys are memory addresses, so
    # a whole legacy file would differ on every run
    sys_info = dict(protocol_version=torch.serialization.PROTOCOL_VERSION, little_endian=True,
                    type_sizes=dict(short=2, int=4, long=4))
    (OUT / "legacy.pt").write_bytes(
        pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2) +
        pickle.dumps(torch.serialization.PROTOCOL_VERSION, protocol=2) +
        pickle.dumps(sys_info, protocol=2))


def corpus() -> None:
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    CORPUS.mkdir(parents=True)
    for name in ["dtypes", "dtypes_proto4", "batchnorm", "batchnorm_zip64", "nested"]:
        shutil.copy(OUT / f"{name}.pt", CORPUS / f"{name}.pt")
        if name == "batchnorm_zip64":
            continue  # same data.pkl as batchnorm
        with zipfile.ZipFile(OUT / f"{name}.pt") as z:
            pkl = next(n for n in z.namelist() if n.endswith("/data.pkl"))
            (CORPUS / f"{name}.pkl").write_bytes(z.read(pkl))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    dtypes_case()
    batchnorm_case()
    nested_case()
    hostile_cases()
    corpus()
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(list(OUT.iterdir()))} files, {total} bytes, to {OUT}")


if __name__ == "__main__":
    main()
