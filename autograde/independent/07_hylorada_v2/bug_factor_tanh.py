# sample: 'simplifies' the factor to f = 1 + 0.5 * tanh(w . P): same range (0.5, 1.5) and f = 1 at w = 0, so every start / zero-prior / no-prior property holds, but 0.5 + sigmoid(u) = 1 + 0.5 tanh(u / 2), so this is the contract's factor at twice the logit (slope 1/2 instead of 1/4 at 0): with a moved w every factor, and w's gradient, is wrong
# expect: partial
# bug: factor formula wrong (1 + 0.5 tanh(u) instead of 0.5 + sigmoid(u))
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
        f = 1 + 0.5 * torch.tanh(self.structure_proj(structure_prior))     # (B, T, 1), in (0.5, 1.5)
        W, b = self.base_layer.weight, self.base_layer.bias
        y = self.row_scale() * (x @ W.T + f * self.update(x))
        return y if b is None else y + b
