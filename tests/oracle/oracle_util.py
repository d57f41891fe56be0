"""Shared helpers for the PyTorch oracle scripts (tests/oracle/make_*.py).

Writes safetensors without the `safetensors` package so that Debian's python3-torch is
all that is needed. Every fixture records the torch version and seed in its metadata.
"""
import json
import struct

import torch

_DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.uint8: "U8",
}


def save(path, tensors, seed=None, **meta):
    """tensors: dict name -> torch.Tensor (any of the dtypes above)."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        if t.dtype == torch.float64:
            t = t.float()
        raw = t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    m = {"torch": torch.__version__}
    if seed is not None:
        m["seed"] = str(seed)
    m.update({k: str(v) for k, v in meta.items()})
    header["__metadata__"] = m
    js = json.dumps(header, separators=(",", ":")).encode()
    js += b" " * ((8 - len(js) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(js)))
        f.write(js)
        for c in chunks:
            f.write(c)
