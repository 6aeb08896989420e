# sample: one fused bias-free nn.Linear(cond_dim, 2·rank) produces gate and shift (split with chunk on the last dim), A and B are nn.Parameters, gate and shift get their singleton middle dims with a while-loop of unsqueeze; merge_conditioned builds a fresh nn.Linear(in, out) with bias b + s·B(Sp) (zero base bias when the base has none)
# expect: full
# %% [rss_lora]
import math


class RSSBilinearLoRA(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.rank = rank
        self.A = nn.Parameter(torch.empty(rank, base_layer.in_features))
        self.B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.film = nn.Linear(cond_dim, 2 * rank, bias=False)    # rows 0..r-1: C, rows r..2r-1: S

    def gate_and_shift(self, p):
        gate, shift = self.film(p).chunk(2, dim=-1)
        return gate, shift

    def forward(self, x, p):
        h = x @ self.A.T                                     # (B, ..., r)
        gate, shift = self.gate_and_shift(p)                 # (B, r) each
        while gate.dim() < h.dim():
            gate, shift = gate.unsqueeze(1), shift.unsqueeze(1)
        return self.base_layer(x) + self.scaling * ((h * gate + shift) @ self.B.T)
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    base = layer.base_layer
    merged = nn.Linear(base.in_features, base.out_features, bias=True,
                       device=base.weight.device, dtype=base.weight.dtype)
    with torch.no_grad():
        gate, shift = layer.gate_and_shift(p)                # (r,), (r,)
        merged.weight.copy_(base.weight + layer.scaling * (layer.B * gate) @ layer.A)
        b0 = base.bias if base.bias is not None else torch.zeros_like(merged.bias)
        merged.bias.copy_(b0 + layer.scaling * layer.B @ shift)
    merged.requires_grad_(False)
    return merged
