# sample: adapters stored transposed (A as (in, r), C and S as (cond_dim, r), B as (r, out)) with a small-normal init (std 0.1) for A, C, S and zero B, einsum in rank space with gate and shift unsqueezed in a loop until they match h's rank; merge_conditioned reads the affine map off the layer itself under torch.no_grad (bias = layer(0, p), weight columns = layer(e_j, p) - bias), so it is right for whatever forward computes
# expect: full
# %% [rss_lora]
import math


class RSSBilinearLoRA(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer          # the frozen nn.Linear; weight (out_features, in_features)
        self.scaling = alpha / rank
        self.base_layer.weight.requires_grad_(False)
        if self.base_layer.bias is not None:
            self.base_layer.bias.requires_grad_(False)
        out_f, in_f = base_layer.weight.shape
        f = dict(dtype=base_layer.weight.dtype, device=base_layer.weight.device)
        self.A_t = nn.Parameter(0.1 * torch.randn(in_f, rank, **f))
        self.C_t = nn.Parameter(0.1 * torch.randn(cond_dim, rank, **f))
        self.S_t = nn.Parameter(0.1 * torch.randn(cond_dim, rank, **f))
        self.B_t = nn.Parameter(torch.zeros(rank, out_f, **f))

    def forward(self, x, p):
        # x: (B, ..., in_features), p: (B, cond_dim) -> (B, ..., out_features)
        h = torch.einsum("...i,ir->...r", x, self.A_t)
        g = torch.einsum("bc,cr->br", p, self.C_t)
        t = torch.einsum("bc,cr->br", p, self.S_t)
        while g.dim() < h.dim():
            g, t = g.unsqueeze(1), t.unsqueeze(1)
        delta = torch.einsum("...r,ro->...o", h * g + t, self.B_t)
        return self.base_layer(x) + self.scaling * delta
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    # p: (cond_dim,). Return an nn.Linear (with a bias) that computes layer(x, p) for this p.
    base = layer.base_layer
    W = base.weight
    n_in = base.in_features
    with torch.no_grad():
        eye = torch.eye(n_in, dtype=W.dtype, device=W.device)
        pp = p.to(W).reshape(1, -1)
        bias = layer(torch.zeros(1, n_in, dtype=W.dtype, device=W.device), pp)[0]     # (out,)
        cols = layer(eye, pp.expand(n_in, -1)) - bias                                 # (in, out)
        merged = nn.Linear(n_in, base.out_features, bias=True, dtype=W.dtype, device=W.device)
        merged.weight.copy_(cols.T)
        merged.bias.copy_(bias)
    return merged.requires_grad_(False)
