# sample: four bias-free nn.Linear modules (A with orthogonal rows, C and S Xavier-uniform, B zeros) and helper methods gate(p), shift(p) and rank_features(x, p) that broadcast over the middle dims with reshape; merge_conditioned folds the gate into B's columns (B * Cp) and builds the bias from zeros when the base has none
# expect: full
# %% [rss_lora]
import math


class RSSBilinearLoRA(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer          # the frozen nn.Linear; weight (out_features, in_features)
        self.scaling = alpha / rank
        self.base_layer.requires_grad_(False)
        in_f, out_f = base_layer.in_features, base_layer.out_features
        dd = dict(device=base_layer.weight.device, dtype=base_layer.weight.dtype)
        self.A = nn.Linear(in_f, rank, bias=False, **dd)
        self.C = nn.Linear(cond_dim, rank, bias=False, **dd)
        self.S = nn.Linear(cond_dim, rank, bias=False, **dd)
        self.B = nn.Linear(rank, out_f, bias=False, **dd)
        nn.init.orthogonal_(self.A.weight)
        nn.init.xavier_uniform_(self.C.weight)
        nn.init.xavier_uniform_(self.S.weight)
        nn.init.zeros_(self.B.weight)

    @staticmethod
    def _spread(v, like):
        # (B, r) -> (B, 1, ..., 1, r) with as many singleton dims as `like` has middle dims
        return v.reshape(v.shape[0], *([1] * (like.dim() - 2)), v.shape[-1])

    def gate(self, p):
        return self.C(p)

    def shift(self, p):
        return self.S(p)

    def rank_features(self, x, p):
        h = self.A(x)
        return h * self._spread(self.gate(p), h) + self._spread(self.shift(p), h)

    def forward(self, x, p):
        # x: (B, ..., in_features), p: (B, cond_dim) -> (B, ..., out_features)
        return self.base_layer(x) + self.scaling * self.B(self.rank_features(x, p))
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    # p: (cond_dim,). Return an nn.Linear (with a bias) that computes layer(x, p) for this p.
    base = layer.base_layer
    with torch.no_grad():
        p = p.to(base.weight)
        Bg = layer.B.weight * layer.gate(p)                     # (out, r): column k times (Cp)_k
        weight = base.weight + layer.scaling * Bg @ layer.A.weight
        b0 = base.bias if base.bias is not None else torch.zeros_like(weight[:, 0])
        bias = b0 + layer.scaling * layer.B.weight @ layer.shift(p)
    merged = nn.Linear(base.in_features, base.out_features, device=weight.device, dtype=weight.dtype)
    merged.weight.data.copy_(weight)
    merged.bias.data.copy_(bias)
    merged.requires_grad_(False)
    return merged
