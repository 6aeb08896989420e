# sample: scales the whole output by the factor, f ⊙ v1(x): the pretrained part and the bias are scaled too
# expect: partial
# fails: factor on update
# %% [hylorada_v2_linear]
class HyLoRADAv2Linear(HyLoRADAv1Linear):
    def __init__(self, base_layer, rank=8, alpha=16, structure_dim=32):
        super().__init__(base_layer, rank, alpha)
        self.scale_from_structure = nn.Linear(structure_dim, 1, bias=False)
        nn.init.zeros_(self.scale_from_structure.weight)

    def forward(self, x, structure_prior=None):
        if structure_prior is not None and structure_prior.shape[:-1] != x.shape[:-1]:
            raise ValueError(f"structure_prior must be (B, T, d) for x {tuple(x.shape)}, got {tuple(structure_prior.shape)}")
        y = super().forward(x)
        if structure_prior is None:
            return y
        return (0.5 + torch.sigmoid(self.scale_from_structure(structure_prior))) * y
