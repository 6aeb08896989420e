# sample: adds w but never uses the prior: v1 under a new name
# expect: partial
# fails: factor on update, per position, prior shape, gradients
# %% [hylorada_v2_linear]
class HyLoRADAv2Linear(HyLoRADAv1Linear):
    def __init__(self, base_layer, rank=8, alpha=16, structure_dim=32):
        super().__init__(base_layer, rank, alpha)
        self.scale_from_structure = nn.Linear(structure_dim, 1, bias=False)
        nn.init.zeros_(self.scale_from_structure.weight)

    def forward(self, x, structure_prior=None):
        return super().forward(x)
