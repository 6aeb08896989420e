# sample: nn.Linear factors, forms V = W + sBA explicitly (allowed), F.linear with the bias after the rescaling
# expect: full
# %% [dora_linear]
import torch.nn.functional as F


class DoRALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        for p in self.base_layer.parameters():
            p.requires_grad = False
        self.lora_A = nn.Linear(base_layer.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base_layer.out_features, bias=False)
        nn.init.zeros_(self.lora_B.weight)
        self.m = nn.Parameter(torch.linalg.vector_norm(base_layer.weight.detach(), dim=1))

    def forward(self, x):
        V = self.base_layer.weight + self.scaling * (self.lora_B.weight @ self.lora_A.weight)
        norm = V.norm(p=2, dim=1, keepdim=True).detach()
        W_new = self.m.unsqueeze(1) * V / norm
        return F.linear(x, W_new, self.base_layer.bias)
