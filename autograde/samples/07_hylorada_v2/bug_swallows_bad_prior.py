# sample: "defensive": a prior of the wrong shape is silently ignored instead of raising
# expect: partial
# fails: prior shape
# %% [hylorada_v2_linear]
class HyLoRADAv2Linear(HyLoRADAv1Linear):
    def __init__(self, base_layer, rank=8, alpha=16, structure_dim=32):
        super().__init__(base_layer, rank, alpha)
        self.structure_dim = structure_dim
        self.scale_from_structure = nn.Linear(structure_dim, 1, bias=False)
        nn.init.zeros_(self.scale_from_structure.weight)

    def forward(self, x, structure_prior=None):
        update = self.update(x)
        if structure_prior is not None and structure_prior.shape == (*x.shape[:-1], self.structure_dim):
            update = (0.5 + torch.sigmoid(self.scale_from_structure(structure_prior))) * update
        W, b = self.base_layer.weight, self.base_layer.bias
        y = self.row_scale() * (x @ W.T + update)
        return y if b is None else y + b
