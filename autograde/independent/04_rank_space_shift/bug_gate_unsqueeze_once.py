# sample: broadcasts gate and shift with .unsqueeze(1), which is right for (B, T, in) only: a (B, in) input silently broadcasts to a (B, B, out) output (row b of sample a gets sample b's condition), and a (B, T, U, in) input lines the batch up with T (a crash unless B == T or B == 1); merge_conditioned is correct
# expect: partial
# bug: gate/shift broadcast hard-coded for 3-D inputs
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
        gate = (p @ self.lora_C.T).unsqueeze(1)              # (B, 1, r) broadcasts over T
        shift = (p @ self.lora_S.T).unsqueeze(1)
        z = h * gate + shift
        return self.base_layer(x) + self.scaling * (z @ self.lora_B.T)
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
        bias = layer.scaling * layer.lora_B @ shift
        if base.bias is not None:
            bias = bias + base.bias
        merged.bias.copy_(bias)
    merged.requires_grad_(False)
    return merged
