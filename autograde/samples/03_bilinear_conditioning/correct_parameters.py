# sample: correct; nn.Parameter factors, the seed's view() broadcasting, merge in place
# expect: full
# %% [bilinear_lora]
import math


class BilinearLoRALinear(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        self.lora_C = nn.Parameter(torch.empty(rank, cond_dim))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.lora_C, a=math.sqrt(5))

    def forward(self, x, p):
        h = x @ self.lora_A.T                                   # (B, ..., r)
        c = p @ self.lora_C.T                                   # (B, r)
        c = c.view(c.shape[0], *[1] * (h.ndim - 2), c.shape[-1])
        return self.base_layer(x) + self.scaling * (h * c) @ self.lora_B.T
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    with torch.no_grad():
        gate = layer.lora_C @ p                                 # (r,)
        layer.base_layer.weight += layer.scaling * layer.lora_B @ torch.diag(gate) @ layer.lora_A
    return layer.base_layer
