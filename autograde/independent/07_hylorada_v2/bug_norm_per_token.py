# sample: folds the factor into the weight, V_t = W + f_t s B A, and takes the row norms of that per-position weight, so the DoRA normalisation becomes per token: n has shape (B, T, out); equal to v1 at f = 1 (w = 0 or no prior), but with a moved w every position is renormalised by its own norm, which the contract forbids (the norms stay per row of the weight)
# expect: partial
# bug: weight norms computed per token (factor folded into the normalised weight)
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
        A, B = self.lora_A, self.lora_B
        V_t = W + f[..., None] * (self.scaling * B @ A)              # (B, T, out, in)
        with torch.no_grad():
            n = V_t.norm(dim=-1)                                   # (B, T, out)
        gamma = torch.sigmoid(self.magnitude_gate)
        m_eff = self.magnitude_init + gamma * (self.magnitude - self.magnitude_init)
        beta = torch.sigmoid(self.residual_weight)
        c = 1 + (1 - beta) * (m_eff / n - 1)
        y = c * (x @ W.T + f * self.update(x))
        return y if b is None else y + b
