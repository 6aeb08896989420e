# sample: A, B, C, S stored transposed as nn.Parameters (A_t (in, r), B_t (r, out), C_t and S_t (cond, r)); forward reshapes x to (B, N, in) and uses einsum; merge_conditioned computes W(p) and b(p) with einsum under torch.no_grad and installs them in a new nn.Linear as fresh frozen Parameters
# expect: full
# %% [rss_lora]
import math


class RSSBilinearLoRA(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        for q in self.base_layer.parameters():
            q.requires_grad_(False)
        d_in, d_out = base_layer.in_features, base_layer.out_features
        self.A_t = nn.Parameter(torch.randn(d_in, rank) / math.sqrt(d_in))
        self.B_t = nn.Parameter(torch.zeros(rank, d_out))
        self.C_t = nn.Parameter(torch.randn(cond_dim, rank) / math.sqrt(cond_dim))
        self.S_t = nn.Parameter(torch.randn(cond_dim, rank) / math.sqrt(cond_dim))

    def forward(self, x, p):
        xs = x.reshape(x.shape[0], -1, x.shape[-1])                   # (B, N, in)
        h = torch.einsum("bni,ir->bnr", xs, self.A_t)
        gate = torch.einsum("bc,cr->br", p, self.C_t)[:, None, :]
        shift = torch.einsum("bc,cr->br", p, self.S_t)[:, None, :]
        delta = torch.einsum("bnr,ro->bno", h * gate + shift, self.B_t)
        return self.base_layer(x) + self.scaling * delta.reshape(*x.shape[:-1], -1)
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    base = layer.base_layer
    with torch.no_grad():
        gate = torch.einsum("c,cr->r", p, layer.C_t)
        shift = torch.einsum("c,cr->r", p, layer.S_t)
        weight = base.weight + layer.scaling * torch.einsum("ir,r,ro->oi", layer.A_t, gate, layer.B_t)
        bias = layer.scaling * torch.einsum("r,ro->o", shift, layer.B_t)
        if base.bias is not None:
            bias = bias + base.bias
    merged = nn.Linear(base.in_features, base.out_features)
    merged.weight = nn.Parameter(weight.clone(), requires_grad=False)
    merged.bias = nn.Parameter(bias.clone(), requires_grad=False)
    return merged
