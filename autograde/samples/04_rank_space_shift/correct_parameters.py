# sample: correct; nn.Parameter factors, the seed's view() broadcasting, merge into a new layer
# expect: full
# %% [rss_lora]
import math


class RSSBilinearLoRA(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        self.lora_C = nn.Parameter(torch.empty(rank, cond_dim))
        self.lora_S = nn.Parameter(torch.empty(rank, cond_dim))
        for w in (self.lora_A, self.lora_C, self.lora_S):
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))

    def forward(self, x, p):
        h = x @ self.lora_A.T                                   # (B, ..., r)
        view = (p.shape[0],) + (1,) * (h.ndim - 2) + (-1,)
        gate = (p @ self.lora_C.T).view(view)                   # (B, 1, ..., r)
        shift = (p @ self.lora_S.T).view(view)
        return self.base_layer(x) + self.scaling * (h * gate + shift) @ self.lora_B.T
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    base = layer.base_layer
    merged = nn.Linear(base.in_features, base.out_features, bias=True)
    with torch.no_grad():
        gate, shift = layer.lora_C @ p, layer.lora_S @ p
        merged.weight.copy_(base.weight + layer.scaling * layer.lora_B @ torch.diag(gate) @ layer.lora_A)
        bias = base.bias if base.bias is not None else torch.zeros(base.out_features)
        merged.bias.copy_(bias + layer.scaling * layer.lora_B @ shift)
    return merged
