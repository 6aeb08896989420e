# sample: multiplies the whole v1 output (W x, update and bias) by the per-position factor f_t
# expect: partial
# bug: the factor goes in the wrong place: f_t must multiply the adapter's update term s·BAx_t only; scaling the whole output also rescales the pretrained part W x_t and the bias, so a trained w changes what the frozen model computes
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
        y = super().forward(x)
        if structure_prior is None:
            return y
        self._check(x, structure_prior)
        return (0.5 + torch.sigmoid(self.scale_from_structure(structure_prior))) * y
