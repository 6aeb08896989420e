# sample: correct; one fused nn.Linear(cond_dim, 2r) for gate and shift, chunk, einsum, merge through a deep copy
# expect: full
# %% [rss_lora]
import copy


class RSSBilinearLoRA(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.rank = rank
        d_in, d_out = base_layer.in_features, base_layer.out_features
        self.A = nn.Parameter(torch.randn(rank, d_in) / d_in ** 0.5)
        self.B = nn.Parameter(torch.zeros(d_out, rank))
        self.film = nn.Linear(cond_dim, 2 * rank, bias=False)   # rows: first the shift, then the gate

    def forward(self, x, p):
        shift, gate = self.film(p).chunk(2, dim=-1)            # (B, r) each
        h = torch.einsum("b...i,ri->b...r", x, self.A)
        z = torch.einsum("b...r,br->b...r", h, gate)
        z = z + shift.reshape(shift.shape[0], *[1] * (h.dim() - 2), self.rank)
        return self.base_layer(x) + self.scaling * torch.einsum("b...r,or->b...o", z, self.B)
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    base = layer.base_layer
    merged = nn.Linear(base.in_features, base.out_features)
    with torch.no_grad():
        shift, gate = layer.film(p).chunk(2, dim=-1)
        merged.weight.copy_(base.weight + layer.scaling * torch.einsum("or,r,ri->oi", layer.B, gate, layer.A))
        bias = copy.deepcopy(base.bias) if base.bias is not None else torch.zeros(base.out_features)
        merged.bias.copy_(bias + layer.scaling * layer.B @ shift)
    return merged
