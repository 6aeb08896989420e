# sample: multiplies A x by the gate C p directly (h * g), without inserting singleton dims for the middle axes of x; right for 2-D x
# expect: partial
# bug: per-sample broadcasting: for x of shape (B, T, in) the gate (B, r) lines up with the T axis, so it crashes when T != B and, when T == B, silently gives position t the condition of sample t instead of each sample its own p
# %% [bilinear_lora]
import math


class BilinearLoRALinear(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        self.base_layer.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        self.lora_C = nn.Parameter(torch.empty(rank, cond_dim))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.lora_C, a=math.sqrt(5))

    def forward(self, x, p):
        h = x @ self.lora_A.T
        g = p @ self.lora_C.T
        return self.base_layer(x) + self.scaling * ((h * g) @ self.lora_B.T)
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    base = layer.base_layer
    merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
    with torch.no_grad():
        g = layer.lora_C @ p
        merged.weight.copy_(base.weight + layer.scaling * layer.lora_B @ torch.diag(g) @ layer.lora_A)
        if base.bias is not None:
            merged.bias.copy_(base.bias)
    return merged
