# sample: computes base_layer(x) inside torch.no_grad() ("the base is frozen anyway"); adapter, shift, scaling and merge are right
# expect: partial
# bug: the frozen base path is cut from the graph: under no_grad the gradient w.r.t. x no longer includes W (only the adapter's path), so earlier layers receive a wrong gradient; freezing means requires_grad=False on W, not no_grad on the path from x
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
        with torch.no_grad():
            y0 = self.base_layer(x)
        h = x @ self.lora_A.T
        g = self._expand(p @ self.lora_C.T, h)
        sh = self._expand(p @ self.lora_S.T, h)
        return y0 + self.scaling * ((h * g + sh) @ self.lora_B.T)
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    base = layer.base_layer
    merged = nn.Linear(base.in_features, base.out_features, bias=True)
    with torch.no_grad():
        g, sh = layer.lora_C @ p, layer.lora_S @ p
        merged.weight.copy_(base.weight + layer.scaling * layer.lora_B @ torch.diag(g) @ layer.lora_A)
        bias = layer.scaling * layer.lora_B @ sh
        merged.bias.copy_(bias if base.bias is None else base.bias + bias)
    return merged
