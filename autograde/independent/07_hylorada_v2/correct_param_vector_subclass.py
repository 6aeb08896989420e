# sample: subclasses the given HyLoRADAv1Linear; w is an nn.Parameter of shape (structure_dim,) initialised with zeros; the factor is 0.5 + sigmoid(prior @ w) unsqueezed to (B, T, 1); a wrong prior shape raises ValueError naming the expected shape; no prior falls back to v1's forward
# expect: full
# %% [hylorada_v2_linear]
class HyLoRADAv2Linear(HyLoRADAv1Linear):
    def __init__(self, base_layer, rank=8, alpha=16, structure_dim=32):
        super().__init__(base_layer, rank, alpha)
        self.structure_dim = structure_dim
        self.w = nn.Parameter(torch.zeros(structure_dim))

    def factor(self, structure_prior):
        return (0.5 + torch.sigmoid(structure_prior @ self.w)).unsqueeze(-1)     # (B, T, 1)

    def forward(self, x, structure_prior=None):
        if structure_prior is None:
            return super().forward(x)
        expected = tuple(x.shape[:-1]) + (self.structure_dim,)
        if tuple(structure_prior.shape) != expected:
            raise ValueError(f"structure_prior must have shape {expected}, got {tuple(structure_prior.shape)}")
        W, b = self.base_layer.weight, self.base_layer.bias
        y = self.row_scale() * (x @ W.T + self.factor(structure_prior) * self.update(x))
        return y if b is None else y + b
