"""Oracle for the core: torch.optim.Adam over a few steps, and HiGAN+'s LR lambda.
Writes core_adam.safetensors."""
import torch

from oracle_util import save

torch.manual_seed(1234)
w0 = torch.randn(37)
grads = [torch.randn(37) * s for s in (1.0, 0.01, 3.0, 0.5)]
w = w0.clone().requires_grad_(True)
opt = torch.optim.Adam([w], lr=2e-4, betas=(0.5, 0.999), eps=1e-8)
out = {"w0": w0}
for i, g in enumerate(grads):
    w.grad = g.clone()
    opt.step()
    out["grad%d" % i] = g
    out["w%d" % (i + 1)] = w.detach().clone()
state = opt.state[w]
out["exp_avg"] = state["exp_avg"]
out["exp_avg_sq"] = state["exp_avg_sq"]

# LambdaLR of HiGAN+: 1 - min(max(0, (e - 25) / 47), 0.999), for epochs 0..80
lam = [1 - min(max(0, (e - 25) / 47), 0.999) for e in range(81)]
out["lr_lambda"] = torch.tensor(lam, dtype=torch.float32)
save("core_adam.safetensors", out, seed=1234)
