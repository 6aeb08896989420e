# sample: the factor multiplies the pretrained part W x instead of the update
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
        W, b = self.base_layer.weight, self.base_layer.bias
        wx = x @ W.T
        if structure_prior is not None:
            wx = (0.5 + torch.sigmoid(self.scale_from_structure(structure_prior))) * wx
        y = self.row_scale() * (wx + self.update(x))
        return y if b is None else y + b
