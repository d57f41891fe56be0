"""Fixtures for tests/test_safetensors.c, written by PyTorch through oracle_util.save.

st_dtypes.safetensors  every supported dtype; F16/BF16/int tensors come with "<name>_as_f32"
                       holding torch's own float32 conversion (the C reader must match it
                       exactly), special values (subnormals, inf, nan, -0), a 0-d scalar, an
                       empty tensor, and names/metadata that need JSON escapes (json.dumps
                       writes non-ASCII as \\uXXXX, astral characters as surrogate pairs).
st_module.safetensors  state_dict of a tiny torch module (Linear + BatchNorm1d) under the
                       prefix "net.", so num_batches_tracked is a 0-d int64 tensor as in real
                       PyTorch checkpoints; "net_f16." holds the same weights as F16.
"""
import os

import torch

from oracle_util import save

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 1234


def half_patterns():
    """Every exponent of half with a few mantissas and both signs, plus random values."""
    bits = []
    for sign in (0, 1):
        for exp in range(32):
            for man in (0, 1, 0x155, 0x200, 0x3FF):
                bits.append((sign << 15) | (exp << 10) | man)
    t = torch.tensor(bits, dtype=torch.int32).to(torch.int16).view(torch.float16)
    return torch.cat([t, (torch.randn(37) * 300).half()])


def bf16_patterns():
    bits = []
    for sign in (0, 1):
        for exp in (0, 1, 2, 60, 126, 127, 128, 200, 253, 254, 255):
            for man in (0, 1, 0x2A, 0x40, 0x7F):
                bits.append((sign << 15) | (exp << 7) | man)
    t = torch.tensor(bits, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    return torch.cat([t, (torch.randn(29) * 1e5).bfloat16()])


def dtypes():
    torch.manual_seed(SEED)
    f32 = torch.randn(3, 5)
    f32_special = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-40,
                                -1.17549435e-38, 3.4028235e38, 1.0, -2.5])
    f16 = half_patterns().reshape(-1)
    bf16 = bf16_patterns().reshape(-1)
    i64 = torch.tensor([-(2 ** 63), 2 ** 63 - 1, 2 ** 53 + 1, -1, 0, 123456789012345, 16777217],
                       dtype=torch.int64)
    i32 = torch.tensor([[-(2 ** 31), 2 ** 31 - 1, 16777217], [-7, 0, 42]], dtype=torch.int32)
    i16 = torch.tensor([-32768, 32767, -1, 0, 1000], dtype=torch.int16)
    u8 = torch.arange(256, dtype=torch.int32).to(torch.uint8).reshape(16, 16)
    t = {
        "f32": f32, "f32_special": f32_special,
        "f16": f16.reshape(-1, 7) if f16.numel() % 7 == 0 else f16,
        "bf16": bf16,
        "i64": i64, "i32": i32, "i16": i16, "u8": u8,
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        "sp\u00e9cial/\U0001F600.\"q\\uote\"": torch.arange(4, dtype=torch.float32).reshape(2, 2),
    }
    for k in ("f16", "bf16", "i64", "i32", "i16", "u8"):
        t[k + "_as_f32"] = t[k].float()
    save(os.path.join(HERE, "st_dtypes.safetensors"), t, seed=SEED,
         note="caf\u00e9 \"quoted\" back\\slash \U0001F600 tab\tnewline\n")


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)
        self.bn = torch.nn.BatchNorm1d(3)


def module():
    torch.manual_seed(SEED + 1)
    m = Tiny()
    m.train()
    for _ in range(3):   # move the running stats and num_batches_tracked away from defaults
        m.bn(m.fc(torch.randn(5, 4)))
    sd = m.state_dict()
    t = {"net." + k: v for k, v in sd.items()}
    t.update({"net_f16." + k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()})
    save(os.path.join(HERE, "st_module.safetensors"), t, seed=SEED + 1)


if __name__ == "__main__":
    dtypes()
    module()
