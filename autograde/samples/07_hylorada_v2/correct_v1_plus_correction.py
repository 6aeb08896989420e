# sample: correct; v1's output plus c ⊙ (f − 1)·update, with w an nn.Parameter of shape (structure_dim,)
# expect: full
# %% [hylorada_v2_linear]
class HyLoRADAv2Linear(HyLoRADAv1Linear):
    def __init__(self, base_layer, rank=8, alpha=16, structure_dim=32):
        super().__init__(base_layer, rank, alpha)
        self.w = nn.Parameter(torch.zeros(structure_dim))

    def forward(self, x, structure_prior=None):
        y = super().forward(x)
        if structure_prior is None:
            return y
        f = 0.5 + torch.sigmoid(structure_prior @ self.w)          # (B, T)
        return y + self.row_scale() * (f - 1).unsqueeze(-1) * self.update(x)
