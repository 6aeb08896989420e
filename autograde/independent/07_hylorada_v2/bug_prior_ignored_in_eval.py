# sample: applies the structure factor only in training mode ("like dropout, a training-time modulation") and returns v1 in eval(); correct in train mode
# expect: partial
# bug: the adapter's structure factor is skipped in eval(): the factor is part of the function the layer learned, not a regulariser, so eval-mode outputs with a prior must equal train-mode outputs
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
        if structure_prior is None or not self.training:
            return super().forward(x)
        self._check(x, structure_prior)
        f = 0.5 + torch.sigmoid(self.scale_from_structure(structure_prior))
        W, b = self.base_layer.weight, self.base_layer.bias
        y = self.row_scale() * (x @ W.T + f * self.update(x))
        return y if b is None else y + b
