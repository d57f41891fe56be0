"""Fixtures for tests/test_pth.c (the C reader of torch.save checkpoints, data_tools/pth.h).

Run with Debian's torch: /usr/bin/python3 make_pth.py (from any directory).

Converted by the test, compared bit for bit with <name>_expected.safetensors:
  pth_nested.pth     torch.save of a HiGAN+-style dict {'Generator': state_dict,
                     'StyleEncoder': state_dict, 'Epoch', 'OPT.G' (Adam state), 'fid'
                     (numpy float64), 'WER', 'note'}: F32/F16/BF16/F64/I64/I32/I16/I8/U8/bool
                     tensors, int64 num_batches_tracked, an nn.Parameter, views at an offset,
                     a transposed and a stepped view sharing one storage, an expanded
                     (stride 0) tensor, a 0-d and an empty tensor.
  pth_plain.pth      torch.save of a plain state dict (converted with --prefix StyleBackbone).
  pth_zip64.pth      hand-built: ZIP64 central directory, pickle protocol 4 (FRAME,
                     SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, LONG1), root folder
                     "some_root"; checked here to load in torch.load.
  pth_bigendian.pth  the same content with a "byteorder" entry "big" (as PyTorch >= 2.1
                     writes on big-endian machines) and big-endian storages.
  (pth_zip64 and pth_bigendian share pth_handmade_expected.safetensors.)

Must fail cleanly, with a message naming the problem:
  pth_evil_global.pth   pickle calling os.system
  pth_evil_opcode.pth   unknown pickle opcode 0xff
  pth_bad_key.pth       a storage key that is not in the zip
  pth_bad_offset.pth    a view reaching past the end of its storage
  pth_bad_numel.pth     a storage shorter than the pickle says
  pth_deflate.pth       a checkpoint re-zipped with DEFLATE
  pth_legacy.pth        the start of the pre-1.6 (non-zip) torch.save format
"""
import collections
import io
import os
import pickle
import struct
import zipfile
import zlib

import numpy as np
import torch

from oracle_util import save

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 4321


def out(name):
    return os.path.join(HERE, name)


# ---- a minimal zip writer laid out like torch.save (STORED, 64-byte aligned data) ----------
def write_zip(path, entries, zip64=False, align=64):
    """entries: list of (name, bytes). zip64=True puts every size/offset in ZIP64 records."""
    buf, cd = bytearray(), bytearray()
    for name, data in entries:
        nb = name.encode()
        crc = zlib.crc32(data) & 0xFFFFFFFF
        off = len(buf)
        extra = struct.pack("<HHQQ", 1, 16, len(data), len(data)) if zip64 else b""
        pad = (-(off + 30 + len(nb) + len(extra) + 4)) % align
        extra += struct.pack("<HH", 0x4246, pad) + b"Z" * pad           # torch's "FB" padding field
        size32 = 0xFFFFFFFF if zip64 else len(data)
        ver = 45 if zip64 else 20
        buf += struct.pack("<IHHHHHIIIHH", 0x04034B50, ver, 0, 0, 0, 0, crc, size32, size32,
                           len(nb), len(extra)) + nb + extra
        assert len(buf) % align == 0
        buf += data
        cextra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), off) if zip64 else b""
        cd += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, ver, ver, 0, 0, 0, 0, crc, size32, size32,
                          len(nb), len(cextra), 0, 0, 0, 0, 0xFFFFFFFF if zip64 else off) + nb + cextra
    cd_off = len(buf)
    buf += cd
    n = len(entries)
    if zip64:
        z64 = len(buf)
        buf += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(cd), cd_off)
        buf += struct.pack("<IIQI", 0x07064B50, 0, z64, 1)
        buf += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    else:
        buf += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(cd), cd_off, 0)
    with open(path, "wb") as f:
        f.write(bytes(buf))


# ---- hand-made pickles: tensors as persistent-id storages, like torch.save writes them ------
class FakeStorage:
    def __init__(self, cls, key, numel):
        self.cls, self.key, self.numel = cls, key, numel


class FakeTensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, self.offset, tuple(self.size), tuple(self.stride), False,
                 collections.OrderedDict()))


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, FakeStorage):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None


def dumps(obj, protocol=2):
    f = io.BytesIO()
    Pickler(f, protocol=protocol).dump(obj)
    return f.getvalue()


_STORAGE = {torch.float32: torch.FloatStorage, torch.float16: torch.HalfStorage,
            torch.bfloat16: torch.BFloat16Storage, torch.float64: torch.DoubleStorage,
            torch.int64: torch.LongStorage, torch.int32: torch.IntStorage,
            torch.int16: torch.ShortStorage, torch.int8: torch.CharStorage,
            torch.uint8: torch.ByteStorage, torch.bool: torch.BoolStorage}


def storage_bytes(base, big):
    t = base.contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    a = t.numpy()
    return (a.byteswap() if big else a).tobytes()


class Archive:
    """Collects storages (1-D base tensors) and views of them for a hand-made checkpoint."""

    def __init__(self):
        self.storages = []   # (key, base)

    def storage(self, base):
        key = str(len(self.storages))
        self.storages.append((key, base))
        return FakeStorage(_STORAGE[base.dtype], key, base.numel())

    @staticmethod
    def view(st, base, offset, size, stride):
        expected = torch.as_strided(base, size, stride, offset)
        return FakeTensor(st, offset, size, stride), expected

    def write(self, path, obj, root, zip64=False, big=False, protocol=2, extra_entries=()):
        entries = [(root + "/data.pkl", dumps(obj, protocol))]
        if big:
            entries.append((root + "/byteorder", b"big"))
        for key, base in self.storages:
            entries.append((root + "/data/" + key, storage_bytes(base, big)))
        entries.append((root + "/version", b"3\n"))
        entries.extend(extra_entries)
        write_zip(path, entries, zip64=zip64)


# ---- fixtures -------------------------------------------------------------------------------
def nested():
    torch.manual_seed(SEED)
    g = collections.OrderedDict()
    g["blocks.0.0.conv1.weight"] = torch.randn(3, 2, 3, 3)
    g["blocks.0.0.conv1.bias"] = torch.randn(3)
    g["blocks.0.0.conv1.u0"] = torch.randn(1, 3)
    g["blocks.0.0.conv1.sv0"] = torch.tensor([1.75])
    g["text_embedding.weight"] = torch.randn(5, 4).half()
    g["emb_bf16"] = (torch.randn(2, 3) * 100).bfloat16()
    base = torch.randn(20)
    g["shared.base"] = base
    g["shared.view"] = base[3:9].view(2, 3)          # storage offset 3
    g["shared.t"] = base.view(4, 5).t()              # stride (1, 5)
    g["shared.step"] = base.view(4, 5)[1:3, ::2]     # offset 5, stride (5, 2)
    g["expand"] = torch.randn(3).expand(2, 3)        # stride (0, 1)
    h = torch.randn(12).half()
    g["half.view"] = h[4:10].view(3, 2)
    g["f64"] = torch.randn(2, 3, dtype=torch.float64)
    g["i32"] = torch.tensor([[-2147483648, 2147483647, 0], [1, -1, 7]], dtype=torch.int32)
    g["i16"] = torch.tensor([-32768, 32767, 5], dtype=torch.int16)
    g["i8"] = torch.tensor([-128, 127, -1, 0], dtype=torch.int8)
    g["u8"] = torch.tensor([0, 255, 17], dtype=torch.uint8)
    g["mask"] = torch.tensor([True, False, True])
    g["scalar"] = torch.tensor(3.5)
    g["empty"] = torch.zeros(0, 3)
    g["param"] = torch.nn.Parameter(torch.randn(2, 2))
    enc = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.Adam(enc.parameters(), lr=2e-4)
    for _ in range(2):
        enc(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
    e = enc.state_dict()
    ckpt = {"Generator": g, "StyleEncoder": e, "Epoch": 3, "OPT.G": opt.state_dict(),
            "fid": np.float64(12.25), "WER": 0.125, "note": "hello"}
    torch.save(ckpt, out("pth_nested.pth"))
    exp = {}
    for net in ("Generator", "StyleEncoder"):
        for k, v in ckpt[net].items():
            v = v.detach()
            if v.dtype == torch.int8:
                v = v.to(torch.int16)
            elif v.dtype == torch.bool:
                v = v.to(torch.uint8)
            exp[net + "." + k] = v
    save(out("pth_nested_expected.safetensors"), exp, seed=SEED)


def plain():
    torch.manual_seed(SEED + 1)
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    m.train()
    m(torch.randn(2, 1, 5, 5))
    sd = m.state_dict()
    torch.save(sd, out("pth_plain.pth"))
    save(out("pth_plain_expected.safetensors"), {"StyleBackbone." + k: v for k, v in sd.items()}, seed=SEED + 1)


def handmade():
    torch.manual_seed(SEED + 2)
    a = Archive()
    exp = {}
    f32 = torch.randn(10)
    s0 = a.storage(f32)
    g = collections.OrderedDict()
    for key, off, size, stride in (("w", 2, (2, 3), (3, 1)), ("wt", 2, (3, 2), (1, 3)), ("all", 0, (10,), (1,))):
        g[key], exp["Generator." + key] = a.view(s0, f32, off, size, stride)
    for name, base, size, stride, off in (
            ("h", torch.randn(6).half(), (2, 3), (3, 1), 0),
            ("b", (torch.randn(4) * 1e3).bfloat16(), (4,), (1,), 0),
            ("n", torch.tensor([123456789012345], dtype=torch.int64), (), (), 0),
            ("d", torch.randn(5, dtype=torch.float64), (2, 2), (2, 1), 1),
            ("i", torch.tensor([1, -2, 3, -4, 5, -6], dtype=torch.int32), (3,), (2,), 0)):
        g[name], t = a.view(a.storage(base), base, off, size, stride)
        exp["Generator." + name] = t.float() if t.dtype == torch.float64 else t
    e = collections.OrderedDict()
    x16 = torch.tensor([-300, 2, 30000], dtype=torch.int16)
    u8 = torch.tensor([9, 8, 7, 6], dtype=torch.uint8)
    e["x"], exp["StyleEncoder.x"] = a.view(a.storage(x16), x16, 0, (3,), (1,))
    e["y"], exp["StyleEncoder.y"] = a.view(a.storage(u8), u8, 1, (3,), (1,))
    obj = {"Generator": g, "StyleEncoder": e, "Epoch": 2 ** 40, "lr": 2e-4, "flag": True,
           "none": None, "lst": [1, 2, 3], "tup": (1, "a")}
    a.write(out("pth_zip64.pth"), obj, "some_root", zip64=True, protocol=4)
    a.write(out("pth_bigendian.pth"), obj, "some_root", big=True)
    save(out("pth_handmade_expected.safetensors"), exp, seed=SEED + 2)
    # sanity: the hand-made ZIP64 file is a valid torch checkpoint
    got = torch.load(out("pth_zip64.pth"))
    for k, v in exp.items():
        net, key = k.split(".", 1)
        w = got[net][key]
        w = w.float() if w.dtype == torch.float64 else w
        assert w.dtype == v.dtype and w.shape == v.shape and torch.equal(w, v), k
    assert got["Epoch"] == 2 ** 40


def bad():
    f32 = torch.arange(4, dtype=torch.float32)
    data = storage_bytes(f32, False)

    def raw_zip(path, pkl, storages=(("0", data),)):
        write_zip(path, [("r/data.pkl", pkl)] + [("r/data/" + k, v) for k, v in storages] +
                  [("r/version", b"3\n")])

    # os.system("echo hi") written by hand: GLOBAL 'os system', then REDUCE
    evil = b"\x80\x02cos\nsystem\nq\x00X\x07\x00\x00\x00echo hiq\x01\x85q\x02Rq\x03."
    raw_zip(out("pth_evil_global.pth"), evil)
    raw_zip(out("pth_evil_opcode.pth"), b"\x80\x02}q\x00(X\x01\x00\x00\x00a\xffq\x01u.")

    def one_tensor(key, numel, offset, size, stride):
        st = FakeStorage(torch.FloatStorage, key, numel)
        return dumps({"Generator": collections.OrderedDict(w=FakeTensor(st, offset, size, stride))})

    raw_zip(out("pth_bad_key.pth"), one_tensor("99", 4, 0, (4,), (1,)))
    raw_zip(out("pth_bad_offset.pth"), one_tensor("0", 4, 2, (3,), (1,)))
    raw_zip(out("pth_bad_numel.pth"), one_tensor("0", 10, 0, (10,), (1,)))
    with zipfile.ZipFile(out("pth_plain.pth")) as src, \
            zipfile.ZipFile(out("pth_deflate.pth"), "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():   # fixed timestamps keep the fixture reproducible
            zi = zipfile.ZipInfo(info.filename, (2020, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(zi, src.read(info.filename))
    # The legacy (< 1.6) format starts with these pickles (magic number, protocol version,
    # sys info); torch's own writer keys storages by memory address, so it is not reproducible.
    legacy = b"".join(pickle.dumps(x, protocol=2) for x in (
        0x1950A86A20F9469CFC6C, 1001,
        {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}))
    with open(out("pth_legacy.pth"), "wb") as f:
        f.write(legacy)


if __name__ == "__main__":
    nested()
    plain()
    handmade()
    bad()
    for f in sorted(os.listdir(HERE)):
        if f.startswith("pth_"):
            size = os.path.getsize(out(f))
            assert size < 50_000, f
            print(f"{f}: {size} bytes")
