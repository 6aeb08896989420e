# sample: multiplies the whole v1 output by the factor, f * (c * (Wx + sBAx) + b), 'position-dependent scaling of the layer'; at w = 0 (f = 1) and without a prior it is v1, so the start is right, but once w moves the pretrained path Wx and the bias are scaled per position too, and a fresh adapter (B = 0) no longer equals its base under a non-zero w
# expect: partial
# bug: factor in the wrong place (scales the whole output, bias included, not only the update)
# %% [hylorada_v2_linear]
class HyLoRADAv2Linear(HyLoRADAv1Linear):
    def __init__(self, base_layer, rank=8, alpha=16, structure_dim=32):
        super().__init__(base_layer, rank, alpha)
        self.structure_dim = structure_dim
        W = self.base_layer.weight
        self.structure_proj = nn.Linear(structure_dim, 1, bias=False, device=W.device, dtype=W.dtype)
        nn.init.zeros_(self.structure_proj.weight)

    def forward(self, x, structure_prior=None):
        # x: (B, T, in_features); structure_prior: (B, T, structure_dim) or None (then: v1)
        if structure_prior is None:
            return super().forward(x)
        expected = tuple(x.shape[:-1]) + (self.structure_dim,)
        if tuple(structure_prior.shape) != expected:
            raise ValueError(f"structure_prior must have shape {expected}, got {tuple(structure_prior.shape)}")
        f = 0.5 + torch.sigmoid(self.structure_proj(structure_prior))      # (B, T, 1)
        W, b = self.base_layer.weight, self.base_layer.bias
        y = self.row_scale() * (x @ W.T + self.update(x))
        y = y if b is None else y + b
        return f * y
