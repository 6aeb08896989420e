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
        y = super().forward(x)
        if structure_prior is None:
            return y
        return (0.5 + torch.sigmoid(self.scale_from_structure(structure_prior))) * y
