# sample: merge_conditioned works in place on layer.base_layer (adds s·B diag(Cp) A to the base weight under torch.no_grad, adds s·B S p to its bias, creating a zero bias first when the base has none) and returns layer.base_layer: the returned layer is right, but the given layer changes, which 04's contract forbids (the merge is for one p; the layer stays unchanged)
# expect: partial
# bug: merge writes into the layer it was given
# %% [rss_lora]
import math


class RSSBilinearLoRA(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        self.base_layer.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        self.lora_C = nn.Parameter(torch.empty(rank, cond_dim))
        self.lora_S = nn.Parameter(torch.empty(rank, cond_dim))
        for w in (self.lora_A, self.lora_C, self.lora_S):
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))

    def _expand(self, t, h):
        return t.view(t.shape[0], *([1] * (h.dim() - 2)), t.shape[-1])

    def forward(self, x, p):
        h = x @ self.lora_A.T
        g = self._expand(p @ self.lora_C.T, h)
        sh = self._expand(p @ self.lora_S.T, h)
        return self.base_layer(x) + self.scaling * ((h * g + sh) @ self.lora_B.T)
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    base = layer.base_layer
    with torch.no_grad():
        g, sh = layer.lora_C @ p, layer.lora_S @ p
        base.weight.add_(layer.scaling * layer.lora_B @ torch.diag(g) @ layer.lora_A)
        if base.bias is None:
            base.bias = nn.Parameter(torch.zeros(base.out_features, dtype=base.weight.dtype,
                                                 device=base.weight.device), requires_grad=False)
        base.bias.add_(layer.scaling * layer.lora_B @ sh)
    return base
