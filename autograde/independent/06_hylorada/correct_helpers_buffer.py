# sample: nn.Parameter adapters and the seed's attribute names, extra helper methods gate(), blend(), effective_magnitude(), row_norm() (torch.no_grad) and delta_weight(); forward rescales base_layer's bias-free output plus the low-rank update, W x + s B(A x), by the row factor and adds the bias once at the end
# expect: full
# %% [hylorada_linear]
import torch.nn.functional as F


class HyLoRADALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer  # the frozen nn.Linear; weight (out_features, in_features)
        self.rank = rank
        self.scaling = alpha / rank
        in_features, out_features = base_layer.in_features, base_layer.out_features
        self.base_layer.requires_grad_(False)
        w = base_layer.weight
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, dtype=w.dtype, device=w.device))
        nn.init.orthogonal_(self.lora_A)
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, dtype=w.dtype, device=w.device))
        self.magnitude = nn.Parameter(torch.linalg.vector_norm(w.detach(), dim=1))
        self.register_buffer("magnitude_init", self.magnitude.detach().clone())
        self.magnitude_gate = nn.Parameter(torch.tensor(0.0, dtype=w.dtype, device=w.device))
        self.residual_weight = nn.Parameter(torch.tensor(0.1, dtype=w.dtype, device=w.device))

    def gate(self):
        return torch.sigmoid(self.magnitude_gate)

    def blend(self):
        return torch.sigmoid(self.residual_weight)

    def effective_magnitude(self):
        g = self.gate()
        return g * self.magnitude + (1 - g) * self.magnitude_init

    def delta_weight(self):
        return self.scaling * self.lora_B @ self.lora_A

    @torch.no_grad()
    def row_norm(self):
        return (self.base_layer.weight + self.delta_weight()).norm(dim=1)

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        beta = self.blend()
        c = (1 - beta) * self.effective_magnitude() / self.row_norm() + beta
        z = F.linear(x, self.base_layer.weight) + self.scaling * F.linear(F.linear(x, self.lora_A), self.lora_B)
        y = z * c
        if self.base_layer.bias is not None:
            y = y + self.base_layer.bias
        return y
