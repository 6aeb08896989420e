# sample: computes the gate C p on the first call and caches it in self.gate (thinking of p as a per-layer setting), so later calls with other conditions (or after C is trained) reuse a stale gate; caught by the visible test_shapes, test_update and test_gradients
# expect: partial
# bug: state cached across calls (gate computed once)
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
        self.gate = None

    def forward(self, x, p):
        # x: (B, ..., in_features), p: (B, cond_dim) -> (B, ..., out_features)
        h = x @ self.lora_A.T
        if self.gate is None or self.gate.shape[0] != p.shape[0]:
            self.gate = (p @ self.lora_C.T).detach()
        c = self.gate.view(self.gate.shape[0], *([1] * (h.dim() - 2)), self.gate.shape[-1])
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
