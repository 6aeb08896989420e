# sample: uses the FiLM-style gate 1 + C p (mentioned in section 6) instead of the contract's C p, so the update no longer vanishes at p = 0 and is not linear in p; merge is consistent with that forward; caught by the visible test_identity, test_update and test_gradients
# expect: partial
# bug: wrong gate form (1 + Cp instead of Cp)
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
        self.lora_C = nn.Parameter(torch.empty(rank, cond_dim))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.lora_C, a=math.sqrt(5))
        self.base_layer.requires_grad_(False)

    def forward(self, x, p):
        # x: (B, ..., in_features), p: (B, cond_dim) -> (B, ..., out_features)
        h = x @ self.lora_A.T
        g = 1 + p @ self.lora_C.T              # plain LoRA at p = 0, modulated elsewhere
        g = g.view(g.shape[0], *([1] * (h.dim() - 2)), g.shape[-1])
        return self.base_layer(x) + self.scaling * ((h * g) @ self.lora_B.T)
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    # p: (cond_dim,). Return an nn.Linear that computes layer(x, p) for this p.
    base = layer.base_layer
    with torch.no_grad():
        g = 1 + layer.lora_C @ p
        merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
        merged.weight.copy_(base.weight + layer.scaling * (layer.lora_B * g) @ layer.lora_A)
        if base.bias is not None:
            merged.bias.copy_(base.bias)
    return merged
