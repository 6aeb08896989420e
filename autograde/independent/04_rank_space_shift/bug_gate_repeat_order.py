# sample: flattens x to (B * N, in) and expands the per-sample gate and shift with .repeat(N, 1) instead of repeat_interleave(N, 0): rows are laid out sample-major but the repeated conditions cycle through the batch, so position n of sample b gets the condition of sample (b * N + n) mod B; exact for a batch of one and for (B, in) inputs (N = 1), wrong (mixing samples) for B > 1 with middle dims; merge_conditioned is correct
# expect: partial
# bug: per-sample conditioning broken (conditions repeated in the wrong order, samples mixed)
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
        n_rows = x[..., 0].numel()
        n_per_sample = n_rows // p.shape[0]
        xf = x.reshape(n_rows, x.shape[-1])                     # (B * N, in)
        gate = (p @ self.lora_C.T).repeat(n_per_sample, 1)      # (B * N, r)
        shift = (p @ self.lora_S.T).repeat(n_per_sample, 1)
        z = (xf @ self.lora_A.T) * gate + shift
        out = self.base_layer(xf) + self.scaling * (z @ self.lora_B.T)
        return out.reshape(*x.shape[:-1], out.shape[-1])
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
