"""PyTorch oracle for the sequence ops of higan.h: LSTM (packed, variable lengths), CTC loss,
cross-entropy. Writes tests/oracle/seq_*.safetensors (run from anywhere; fp32 like the C code).

    /usr/bin/python3 tests/oracle/make_seq.py
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from oracle_util import save

HERE = os.path.dirname(os.path.abspath(__file__))


def lstm_case(prefix, seed, B, T, IN, H, layers, bidirectional, lengths):
    torch.manual_seed(seed)
    lstm = nn.LSTM(IN, H, num_layers=layers, bidirectional=bidirectional, batch_first=True)
    x = torch.randn(B, T, IN, requires_grad=True)
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    y, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
    dy = torch.randn_like(y)
    (y * dy).sum().backward()
    d = {prefix + "x": x, prefix + "lengths": torch.tensor(lengths, dtype=torch.int64),
         prefix + "y": y, prefix + "dy": dy, prefix + "dx": x.grad}
    # parameter order of nn.LSTM: per layer, per direction: w_ih, w_hh, b_ih, b_hh
    for name, p in lstm.named_parameters():
        d[prefix + name] = p
        d[prefix + "grad." + name] = p.grad
    return d


def make_lstm():
    d = {}
    # unsorted lengths, max length 4 < T = 5 (a fully padded step), one sequence of length 1
    d.update(lstm_case("bi.", 1, B=3, T=5, IN=3, H=4, layers=2, bidirectional=True, lengths=[3, 4, 1]))
    d.update(lstm_case("uni.", 2, B=2, T=4, IN=5, H=3, layers=2, bidirectional=False, lengths=[2, 4]))
    d.update(lstm_case("bi3.", 3, B=2, T=3, IN=2, H=2, layers=3, bidirectional=True, lengths=[3, 2]))
    save(os.path.join(HERE, "seq_lstm.safetensors"), d, seed="1,2,3")


def ctc_case(prefix, seed, T, C, input_lengths, targets, zero_infinity, scale):
    torch.manual_seed(seed)
    B = len(input_lengths)
    logits = torch.randn(T, B, C) * 2.0
    lp = logits.log_softmax(2).detach().requires_grad_()
    flat = [c for tg in targets for c in tg]
    tl = [len(tg) for tg in targets]
    loss = F.ctc_loss(lp, torch.tensor(flat, dtype=torch.long), torch.tensor(input_lengths),
                      torch.tensor(tl), blank=0, reduction="mean", zero_infinity=zero_infinity)
    (loss * scale).backward()
    return {prefix + "log_probs": lp, prefix + "targets": torch.tensor(flat, dtype=torch.int64),
            prefix + "input_lengths": torch.tensor(input_lengths, dtype=torch.int64),
            prefix + "target_lengths": torch.tensor(tl, dtype=torch.int64),
            prefix + "loss": loss.detach().reshape(1), prefix + "scale": torch.tensor([scale]),
            prefix + "grad": lp.grad}


def make_ctc():
    d = {}
    # a: zero_infinity with an infeasible sample (3 steps for 1 1 2 2, which needs 6),
    #    repeated labels, an empty target, different input lengths
    d.update(ctc_case("a.", 4, T=12, C=5, input_lengths=[12, 9, 3, 7, 5],
                      targets=[[1, 2, 2, 3], [3, 3, 3], [1, 1, 2, 2], [4], []],
                      zero_infinity=True, scale=1.0))
    # b: all feasible, no zero_infinity, a tight sample (2 2 needs exactly 3 steps)
    d.update(ctc_case("b.", 5, T=8, C=4, input_lengths=[8, 3, 6],
                      targets=[[1, 2, 3, 1], [2, 2], [3, 1, 3]],
                      zero_infinity=False, scale=0.7))
    save(os.path.join(HERE, "seq_ctc.safetensors"), d, seed="4,5")


def make_cross_entropy():
    torch.manual_seed(6)
    N, C = 5, 7
    logits = (torch.randn(N, C) * 3.0).requires_grad_()
    labels = torch.randint(0, C, (N,))
    loss = F.cross_entropy(logits, labels)
    (loss * 1.3).backward()
    save(os.path.join(HERE, "seq_cross_entropy.safetensors"),
         {"logits": logits, "labels": labels.to(torch.int64), "loss": loss.detach().reshape(1),
          "scale": torch.tensor([1.3]), "grad": logits.grad}, seed=6)


if __name__ == "__main__":
    make_lstm()
    make_ctc()
    make_cross_entropy()
