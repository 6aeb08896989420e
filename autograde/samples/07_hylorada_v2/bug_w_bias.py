# sample: the projection has a bias (both zero-initialised, so it starts right): a zero prior no longer means f = 1
# expect: partial
# fails: trainable parameters, factor on update, zero prior
# %% [hylorada_v2_linear]
class HyLoRADAv2Linear(HyLoRADAv1Linear):
    def __init__(self, base_layer, rank=8, alpha=16, structure_dim=32):
        super().__init__(base_layer, rank, alpha)
        self.scale_from_structure = nn.Linear(structure_dim, 1)
        nn.init.zeros_(self.scale_from_structure.weight)
        nn.init.zeros_(self.scale_from_structure.bias)

    def forward(self, x, structure_prior=None):
        if structure_prior is not None and structure_prior.shape[:-1] != x.shape[:-1]:
            raise ValueError(f"structure_prior must be (B, T, d) for x {tuple(x.shape)}, got {tuple(structure_prior.shape)}")
        update = self.update(x)
        if structure_prior is not None:
            update = (0.5 + torch.sigmoid(self.scale_from_structure(structure_prior))) * update
        W, b = self.base_layer.weight, self.base_layer.bias
        y = self.row_scale() * (x @ W.T + update)
        return y if b is None else y + b
