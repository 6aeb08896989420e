# sample: folds the average factor over all positions into the weight before taking its row norm
# expect: partial
# fails: factor on update, per position
# %% [hylorada_v2_linear]
class HyLoRADAv2Linear(HyLoRADAv1Linear):
    def __init__(self, base_layer, rank=8, alpha=16, structure_dim=32):
        super().__init__(base_layer, rank, alpha)
        self.scale_from_structure = nn.Linear(structure_dim, 1, bias=False)
        nn.init.zeros_(self.scale_from_structure.weight)

    def forward(self, x, structure_prior=None):
        if structure_prior is not None and structure_prior.shape[:-1] != x.shape[:-1]:
            raise ValueError(f"structure_prior must be (B, T, d) for x {tuple(x.shape)}, got {tuple(structure_prior.shape)}")
        if structure_prior is None:
            return super().forward(x)
        f = 0.5 + torch.sigmoid(self.scale_from_structure(structure_prior))     # (B, T, 1)
        W, b = self.base_layer.weight, self.base_layer.bias
        with torch.no_grad():
            n = (W + f.mean() * self.scaling * self.lora_B @ self.lora_A).norm(dim=1)
        gamma = torch.sigmoid(self.magnitude_gate)
        m_eff = self.magnitude_init + gamma * (self.magnitude - self.magnitude_init)
        c = 1 + (1 - torch.sigmoid(self.residual_weight)) * (m_eff / n - 1)
        y = c * (x @ W.T + f * self.update(x))
        return y if b is None else y + b
