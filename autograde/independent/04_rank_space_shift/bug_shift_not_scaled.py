# sample: scales only the gated part: base(x) + s B((Ax) * (Cp)) + B(Sp), reading the seed's final equation as 'scaling belongs to the LoRA term'; at init and at p = 0 it is the base, the shift is still linear in p and in B's column space, but changing alpha (or the rank) rescales the bilinear part and not the shift; merge_conditioned is consistent with this forward (bias b + B S p), so the merged layer matches the buggy layer
# expect: partial
# bug: wrong scaling (the shift Sp not multiplied by alpha / rank)
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
        gated = self.scaling * (h * gate)               # the LoRA part is scaled ...
        return self.base_layer(x) + (gated + shift) @ self.lora_B.T   # ... the shift is a bias
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    # p: (cond_dim,). Return an nn.Linear (with a bias) that computes layer(x, p) for this p.
    base = layer.base_layer
    W = base.weight
    merged = nn.Linear(base.in_features, base.out_features, bias=True, device=W.device, dtype=W.dtype)
    with torch.no_grad():
        p = p.to(device=W.device, dtype=W.dtype)
        gate = layer.lora_C @ p                                 # (r,)
        shift = layer.lora_S @ p                                # (r,)
        merged.weight.copy_(W + layer.scaling * (layer.lora_B * gate) @ layer.lora_A)
        bias = layer.lora_B @ shift
        if base.bias is not None:
            bias = bias + base.bias
        merged.bias.copy_(bias)
    merged.requires_grad_(False)
    return merged
