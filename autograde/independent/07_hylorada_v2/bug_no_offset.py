# sample: uses f = sigmoid(w . P) and forgets the + 0.5: at w = 0 every position gets f = 0.5, so with a prior the update is halved from the start (v2 does not start as v1, and a converted v1 adapter changes its outputs), and the range is (0, 1) instead of (0.5, 1.5); a fresh adapter (B = 0) is still its base
# expect: partial
# bug: factor formula wrong (0.5 offset missing: f = sigmoid(w . P))
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
        f = torch.sigmoid(self.structure_proj(structure_prior))            # (B, T, 1)
        W, b = self.base_layer.weight, self.base_layer.bias
        y = self.row_scale() * (x @ W.T + f * self.update(x))
        return y if b is None else y + b
