# sample: remembers the last prior it was given (self._last_prior) and reuses it whenever forward is called without one ('the structure of the sequence does not change between layers'): a call without a prior is v1 only until the first call with a prior, after which no-prior calls silently keep scaling by a stale factor (and crash on a batch of another shape)
# expect: partial
# bug: state cached across calls (prior remembered and reused when none is given)
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
            structure_prior = getattr(self, "_last_prior", None)
            if structure_prior is None:
                return super().forward(x)
        self._last_prior = structure_prior.detach()
        expected = tuple(x.shape[:-1]) + (self.structure_dim,)
        if tuple(structure_prior.shape) != expected:
            raise ValueError(f"structure_prior must have shape {expected}, got {tuple(structure_prior.shape)}")
        f = 0.5 + torch.sigmoid(self.structure_proj(structure_prior))      # (B, T, 1)
        W, b = self.base_layer.weight, self.base_layer.bias
        y = self.row_scale() * (x @ W.T + f * self.update(x))
        return y if b is None else y + b
