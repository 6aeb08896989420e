# sample: a correct layer; merge_conditioned builds a new nn.Linear and sets its bias to the shift s·B(Sp) alone
# expect: partial
# bug: bias in the wrong place: the merged bias must be b + s·BSp; setting it to the shift alone drops the base layer's own bias b (right only for bias-free bases)
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
    merged = nn.Linear(base.in_features, base.out_features, bias=True)
    with torch.no_grad():
        g, sh = layer.lora_C @ p, layer.lora_S @ p
        merged.weight.copy_(base.weight + layer.scaling * layer.lora_B @ torch.diag(g) @ layer.lora_A)
        merged.bias.copy_(layer.scaling * layer.lora_B @ sh)
    return merged
