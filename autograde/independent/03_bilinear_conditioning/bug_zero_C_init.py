# sample: initialises both B and C to zero ("start the adapter fully off"), so every gradient of A, B and C is zero and the layer never trains; identity at init and all forward-only checks still pass; caught by the visible test_gradients only
# expect: partial
# bug: initialisation (C and B both zero: dead gradients)
# %% [bilinear_lora]
import math


class BilinearLoRALinear(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer          # the frozen nn.Linear; weight (out_features, in_features)
        self.scaling = alpha / rank
        in_f, out_f = base_layer.in_features, base_layer.out_features
        self.lora_A = nn.Parameter(torch.empty(rank, in_f))
        self.lora_B = nn.Parameter(torch.zeros(out_f, rank))
        self.lora_C = nn.Parameter(torch.zeros(rank, cond_dim))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.base_layer.requires_grad_(False)

    def forward(self, x, p):
        # x: (B, ..., in_features), p: (B, cond_dim) -> (B, ..., out_features)
        h = x @ self.lora_A.T
        c = p @ self.lora_C.T
        c = c.reshape(c.shape[0], *([1] * (h.dim() - 2)), c.shape[1])
        return self.base_layer(x) + self.scaling * ((h * c) @ self.lora_B.T)
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    # p: (cond_dim,). Return an nn.Linear that computes layer(x, p) for this p.
    base = layer.base_layer
    with torch.no_grad():
        g = layer.lora_C @ p                                   # (r,)
        merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
        merged.weight.copy_(base.weight + layer.scaling * (layer.lora_B * g) @ layer.lora_A)
        if base.bias is not None:
            merged.bias.copy_(base.bias)
    return merged
