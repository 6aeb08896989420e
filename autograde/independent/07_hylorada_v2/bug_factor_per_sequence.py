# sample: averages the factor over the positions, f.mean(dim=1, keepdim=True) ('one strength per sequence is more stable'), so every token of a sequence gets the same factor: changing the prior of one token changes the output at every position of that sequence, and the per-position pattern the prior encodes is lost; equal to the contract at w = 0 and for priors that are the same at every position
# expect: partial
# bug: factor not per position (averaged over the sequence)
# %% [hylorada_v2_linear]
class HyLoRADAv2Linear(HyLoRADAv1Linear):
    def __init__(self, base_layer, rank=8, alpha=16, structure_dim=32):
        super().__init__(base_layer, rank, alpha)
        self.structure_dim = structure_dim
        W = self.base_layer.weight
        self.structure_proj = nn.Linear(structure_dim, 1, bias=False, device=W.device, dtype=W.dtype)
        nn.init.zeros_(self.structure_proj.weight)

    def forward(self, x, structure_prior=None):
        # x: (B, T, in_features); structure_prior: (B, T, structure_dim) or None (then: v1)
        if structure_prior is None:
            return super().forward(x)
        expected = tuple(x.shape[:-1]) + (self.structure_dim,)
        if tuple(structure_prior.shape) != expected:
            raise ValueError(f"structure_prior must have shape {expected}, got {tuple(structure_prior.shape)}")
        f = 0.5 + torch.sigmoid(self.structure_proj(structure_prior))      # (B, T, 1)
        f = f.mean(dim=1, keepdim=True)                                     # (B, 1, 1): one per sequence
        W, b = self.base_layer.weight, self.base_layer.bias
        y = self.row_scale() * (x @ W.T + f * self.update(x))
        return y if b is None else y + b
