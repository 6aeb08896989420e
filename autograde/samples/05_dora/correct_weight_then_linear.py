# sample: builds the adapted weight m * V / ||V|| with .data for the norm, then calls the base as a function
# expect: full
# %% [dora_linear]
import torch.nn.functional as F


class DoRALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        W = base_layer.weight
        self.lora_A = nn.Parameter(torch.randn(rank, W.shape[1]) * 0.01)
        self.lora_B = nn.Parameter(torch.zeros(W.shape[0], rank))
        self.magnitude = nn.Parameter(W.data.norm(dim=-1))
        base_layer.requires_grad_(False)

    def adapted_weight(self):
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
        return self.magnitude[:, None] * (V / V.data.norm(dim=-1, keepdim=True))

    def forward(self, x):
        return F.linear(x, self.adapted_weight(), self.base_layer.bias)
