# sample: validates only the last dimension of the prior (structure_dim), so a prior of the wrong shape such as (B, 1, structure_dim), (1, T, structure_dim) or (structure_dim,) silently broadcasts one factor over every position (or every sample) instead of raising, hiding a mis-built prior; right for correctly shaped priors
# expect: partial
# bug: a prior of the wrong shape silently broadcast instead of raising
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
        if structure_prior.shape[-1] != self.structure_dim:
            raise ValueError(f"structure_prior must end in structure_dim = {self.structure_dim}")
        f = 0.5 + torch.sigmoid(self.structure_proj(structure_prior))      # (B, T, 1)
        W, b = self.base_layer.weight, self.base_layer.bias
        y = self.row_scale() * (x @ W.T + f * self.update(x))
        return y if b is None else y + b
