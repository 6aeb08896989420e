# sample: correct; v1's output plus c ⊙ (f − 1)·update, with w an nn.Parameter of shape (structure_dim,)
# expect: full
# %% [hylorada_v2_linear]
class HyLoRADAv2Linear(HyLoRADAv1Linear):
    def __init__(self, base_layer, rank=8, alpha=16, structure_dim=32):
        super().__init__(base_layer, rank, alpha)
        self.w = nn.Parameter(torch.zeros(structure_dim))

    def forward(self, x, structure_prior=None):
        if structure_prior is not None and structure_prior.shape[:-1] != x.shape[:-1]:
            raise ValueError(f"structure_prior must be (B, T, d) for x {tuple(x.shape)}, got {tuple(structure_prior.shape)}")
        y = super().forward(x)
        if structure_prior is None:
            return y
        f = 0.5 + torch.sigmoid(structure_prior @ self.w)          # (B, T)
        return y + self.row_scale() * (f - 1).unsqueeze(-1) * self.update(x)
