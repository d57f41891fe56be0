"""Loss-trajectory oracle: a small conv + BiLSTM + CTC recogniser trained for 12 Adam steps.

The C test (tests/test_train.c) loads the same initial weights and batch, runs the same
steps with higan's ops and compares the loss of every step. Writes train_ctc.safetensors.

Network (input [B, 1, 8, 16], ink in [-1, 1]):
  conv1 3x3 pad 1, 1 -> 4, ReLU
  conv2 3x3 stride 2 pad 1, 4 -> 6, ReLU            -> [B, 6, 4, 8]
  permute to [B, 8, 6*4] (width is time)
  BiLSTM(24, hidden 5, 2 layers) on lengths (packed)  -> [B, 8, 10]
  linear 10 -> 7 classes, log_softmax, as [T, B, 7]
  CTC (blank 0, mean, zero_infinity) with input lengths = image widths // 2
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from oracle_util import save

SEED = 2024
torch.manual_seed(SEED)
B, H, W, C = 3, 8, 16, 7
STEPS, LR = 12, 3e-3


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.lstm = nn.LSTM(24, 5, num_layers=2, bidirectional=True, batch_first=True)
        self.cls = nn.Linear(10, C)

    def forward(self, x, lens):
        h = F.relu(self.conv1(x))
        h = F.relu(self.conv2(h))                       # B, 6, 4, 8
        b, c, hh, ww = h.shape
        h = h.permute(0, 3, 1, 2).reshape(b, ww, c * hh)  # B, 8, 24
        packed = nn.utils.rnn.pack_padded_sequence(h, lens, batch_first=True, enforce_sorted=True)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ww)
        logits = self.cls(out)                           # B, T, C
        return F.log_softmax(logits, dim=2).permute(1, 0, 2)  # T, B, C


net = Net()
x = torch.rand(B, 1, H, W) * 2 - 1
widths = [16, 12, 8]
for i, w in enumerate(widths):
    x[i, :, :, w:] = -1.0
in_lens = torch.tensor([w // 2 for w in widths])
targets = torch.tensor([1, 2, 2, 3, 4, 5, 6, 1, 3], dtype=torch.int32)   # concatenated
tgt_lens = torch.tensor([4, 3, 2])

tensors = {"x": x, "targets": targets, "target_lengths": tgt_lens.int(), "input_lengths": in_lens.int()}
for k, v in net.state_dict().items():
    tensors["init." + k] = v.clone()

opt = torch.optim.Adam(net.parameters(), lr=LR)
losses = []
for step in range(STEPS):
    opt.zero_grad()
    lp = net(x, in_lens)
    loss = F.ctc_loss(lp, targets, in_lens, tgt_lens, blank=0, reduction="mean", zero_infinity=True)
    loss.backward()
    if step == 0:
        for k, p in net.named_parameters():
            tensors["grad0." + k] = p.grad.clone()
    opt.step()
    losses.append(loss.item())
tensors["losses"] = torch.tensor(losses, dtype=torch.float32)
for k, v in net.state_dict().items():
    tensors["final." + k] = v.clone()
save("train_ctc.safetensors", tensors, seed=SEED, lr=LR, steps=STEPS)
print("losses", ["%.5f" % l for l in losses])
