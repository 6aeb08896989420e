# sample: the layer is correct; merge_conditioned folds W + s B diag(Cp) A into layer.base_layer in place under torch.no_grad (creating a bias Parameter on it when it has none) and returns it, as notebook 01's seed merge did; the returned layer is right for that p, but the conditional layer it was given is destroyed: afterwards layer(x, p') adds the update twice for every condition p' (and a second merge for another p merges on top), although the point of a per-condition merge is to keep the conditional layer for the other conditions
# expect: partial
# bug: merge writes into the layer it was given (base_layer modified in place)
# %% [rss_lora]
import math


class RSSBilinearLoRA(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer          # the frozen nn.Linear; weight (out_features, in_features)
        self.scaling = alpha / rank
        self.base_layer.requires_grad_(False)
        self.rank, self.cond_dim = rank, cond_dim
        w = base_layer.weight
        kw = dict(dtype=w.dtype, device=w.device)
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features, **kw))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank, **kw))
        self.lora_C = nn.Parameter(torch.empty(rank, cond_dim, **kw))
        self.lora_S = nn.Parameter(torch.empty(rank, cond_dim, **kw))
        for m in (self.lora_A, self.lora_C, self.lora_S):
            nn.init.kaiming_uniform_(m, a=math.sqrt(5))

    def forward(self, x, p):
        # x: (B, ..., in_features), p: (B, cond_dim) -> (B, ..., out_features)
        h = x @ self.lora_A.T                                   # (B, ..., r)
        view = (p.shape[0],) + (1,) * (x.dim() - 2) + (self.rank,)
        gate = (p @ self.lora_C.T).view(view)
        shift = (p @ self.lora_S.T).view(view)
        z = h * gate + shift
        return self.base_layer(x) + self.scaling * (z @ self.lora_B.T)
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    # p: (cond_dim,). Return an nn.Linear (with a bias) that computes layer(x, p) for this p.
    base = layer.base_layer
    W = base.weight
    with torch.no_grad():
        p = p.to(device=W.device, dtype=W.dtype)
        gate = layer.lora_C @ p                                 # (r,)
        shift = layer.lora_S @ p                                # (r,)
        W.add_(layer.scaling * (layer.lora_B * gate) @ layer.lora_A)
        bias = layer.scaling * layer.lora_B @ shift
        if base.bias is None:
            base.bias = nn.Parameter(bias.clone(), requires_grad=False)
        else:
            base.bias.add_(bias)
    return base
