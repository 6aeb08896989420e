# sample: PEFT-style: base(x) + (c − 1)·W x + c·s·B(A x); the row norm by the expansion, never forming W + sBA
# expect: full
# %% [hylorada_linear]
import torch.nn.functional as F


class HyLoRADALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.base_layer.weight.requires_grad_(False)
        if base_layer.bias is not None:
            self.base_layer.bias.requires_grad_(False)
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        torch.nn.init.orthogonal_(self.lora_A)
        w_norm = base_layer.weight.detach().norm(dim=1)
        self.magnitude = nn.Parameter(w_norm.clone())
        self.register_buffer("m_init", w_norm.clone())
        self.gate = nn.Parameter(torch.zeros(()))
        self.residual = nn.Parameter(torch.tensor(0.1))

    def row_norm(self):
        with torch.no_grad():
            W, A, B, s = self.base_layer.weight, self.lora_A, self.lora_B, self.scaling
            sq = (W * W).sum(1) + 2 * s * (B * (W @ A.T)).sum(1) + s * s * ((B @ (A @ A.T)) * B).sum(1)
            return sq.clamp_min(0).sqrt()

    def forward(self, x):
        gamma = torch.sigmoid(self.gate)
        beta = torch.sigmoid(self.residual)
        m_eff = torch.lerp(self.m_init, self.magnitude, gamma)
        c = 1 + (1 - beta) * (m_eff / self.row_norm() - 1)
        lora = F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling
        return self.base_layer(x) + (c - 1) * F.linear(x, self.base_layer.weight) + c * lora
