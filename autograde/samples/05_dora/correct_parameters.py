# sample: nn.Parameter factors, PEFT-style forward: base(x) + (m/n - 1) W x + (m/n) s B(Ax), norm by the expansion, never forming W + sBA
# expect: full
# %% [dora_linear]
import math

import torch.nn.functional as F


class DoRALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        self.base_layer.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        self.magnitude = nn.Parameter(base_layer.weight.detach().norm(dim=1).clone())

    def weight_norm(self):
        with torch.no_grad():
            W, A, B, s = self.base_layer.weight, self.lora_A, self.lora_B, self.scaling
            sq = (W * W).sum(1) + 2 * s * (B * (W @ A.T)).sum(1) + s * s * ((B @ (A @ A.T)) * B).sum(1)
            return sq.clamp_min(0).sqrt()

    def forward(self, x):
        scale = self.magnitude / self.weight_norm()
        lora = F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling
        return self.base_layer(x) + (scale - 1) * F.linear(x, self.base_layer.weight) + scale * lora
