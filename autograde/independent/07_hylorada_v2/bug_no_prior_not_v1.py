# sample: writes its own no-prior path, base_layer(x) + self.update(x) ('no prior: plain LoRA fallback'), forgetting v1's row factor c; right at init (B = 0) and whenever c = 1, but once m, the logits or B move, a call without a prior is not v1 (the DoRA rescaling and the blend are lost); the prior path is correct
# expect: partial
# bug: no prior does not compute v1 (the row rescaling is dropped)
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
            return self.base_layer(x) + self.update(x)         # no structure: plain LoRA
        expected = tuple(x.shape[:-1]) + (self.structure_dim,)
        if tuple(structure_prior.shape) != expected:
            raise ValueError(f"structure_prior must have shape {expected}, got {tuple(structure_prior.shape)}")
        f = 0.5 + torch.sigmoid(self.structure_proj(structure_prior))      # (B, T, 1)
        W, b = self.base_layer.weight, self.base_layer.bias
        y = self.row_scale() * (x @ W.T + f * self.update(x))
        return y if b is None else y + b
