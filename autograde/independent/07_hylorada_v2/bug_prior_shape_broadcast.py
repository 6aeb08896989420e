# sample: no check of the prior's shape: a prior of shape (B, 1, d_s), (T, d_s) or (B, T, d_s') is silently broadcast (or fails deep inside with an unrelated message); everything else is right
# expect: partial
# bug: silent broadcasting where the contract promises an error: a prior whose shape is not x.shape[:-1] + (structure_dim,) must raise, not be broadcast over positions or samples
# %% [hylorada_v2_linear]
class HyLoRADAv2Linear(HyLoRADAv1Linear):
    def __init__(self, base_layer, rank=8, alpha=16, structure_dim=32):
        super().__init__(base_layer, rank, alpha)
        self.structure_dim = structure_dim
        self.scale_from_structure = nn.Linear(structure_dim, 1, bias=False)
        nn.init.zeros_(self.scale_from_structure.weight)

    def forward(self, x, structure_prior=None):
        if structure_prior is None:
            return super().forward(x)
        f = 0.5 + torch.sigmoid(self.scale_from_structure(structure_prior))
        W, b = self.base_layer.weight, self.base_layer.bias
        y = self.row_scale() * (x @ W.T + f * self.update(x))
        return y if b is None else y + b
