# sample: uses f_t = sigmoid(w·P_t) without the 0.5 offset ("sigmoid already gives a strength between 0 and 1")
# expect: partial
# bug: wrong factor: without the offset f = σ(0) = 0.5 at w = 0, so with a prior a fresh v2 layer halves the update instead of starting as v1, and a zero prior no longer gives f = 1; the factor is 0.5 + σ(w·P), in (0.5, 1.5)
# %% [hylorada_v2_linear]
class HyLoRADAv2Linear(HyLoRADAv1Linear):
    def __init__(self, base_layer, rank=8, alpha=16, structure_dim=32):
        super().__init__(base_layer, rank, alpha)
        self.structure_dim = structure_dim
        self.scale_from_structure = nn.Linear(structure_dim, 1, bias=False)
        nn.init.zeros_(self.scale_from_structure.weight)

    def _check(self, x, prior):
        if prior.shape != x.shape[:-1] + (self.structure_dim,):
            raise ValueError(f"structure_prior must be {tuple(x.shape[:-1]) + (self.structure_dim,)}")

    def forward(self, x, structure_prior=None):
        if structure_prior is None:
            return super().forward(x)
        self._check(x, structure_prior)
        f = torch.sigmoid(self.scale_from_structure(structure_prior))
        W, b = self.base_layer.weight, self.base_layer.bias
        y = self.row_scale() * (x @ W.T + f * self.update(x))
        return y if b is None else y + b
