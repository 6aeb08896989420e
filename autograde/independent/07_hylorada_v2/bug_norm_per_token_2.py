# sample: folds the factor into the weight, V_t = W + f_t·s·BA, and takes the row norms of that per-token weight, so every position gets its own norm (and its own c)
# expect: partial
# bug: weight norms per token: the row norm inside c is a property of the weight W + sBA, the same for every position; recomputing it with f_t makes c depend on the token and breaks y_t = c ⊙ (W x_t + f_t s·BAx_t) + b
# %% [hylorada_v2_linear]
class HyLoRADAv2Linear(HyLoRADAv1Linear):
    def __init__(self, base_layer, rank=8, alpha=16, structure_dim=32):
        super().__init__(base_layer, rank, alpha)
        self.structure_dim = structure_dim
        self.scale_from_structure = nn.Linear(structure_dim, 1, bias=False)
        nn.init.zeros_(self.scale_from_structure.weight)

    def _check(self, x, prior):
        if prior.shape != x.shape[:-1] + (self.structure_dim,):
            raise ValueError(f"structure_prior must be {tuple(x.shape[:-1]) + (self.structure_dim,)}")

    def forward(self, x, structure_prior=None):
        if structure_prior is None:
            return super().forward(x)
        self._check(x, structure_prior)
        f = 0.5 + torch.sigmoid(self.scale_from_structure(structure_prior))   # (B, T, 1)
        W, b = self.base_layer.weight, self.base_layer.bias
        BA = self.scaling * self.lora_B @ self.lora_A                          # (out, in)
        with torch.no_grad():
            V_t = W + f[..., None] * BA                                        # (B, T, out, in)
            n = V_t.norm(dim=-1)                                               # (B, T, out)
        gamma = torch.sigmoid(self.magnitude_gate)
        m_eff = self.magnitude_init + gamma * (self.magnitude - self.magnitude_init)
        beta = torch.sigmoid(self.residual_weight)
        c = 1 + (1 - beta) * (m_eff / n - 1)
        y = c * (x @ W.T + f * self.update(x))
        return y if b is None else y + b
