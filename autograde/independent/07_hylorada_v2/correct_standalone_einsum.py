# sample: written from scratch as an nn.Module (no subclass of v1): A (rank, in) orthogonal and B zeros as nn.Parameters, m and a buffer m0 at the row norms, gate logit 0 and blend logit 0.1; w as nn.Linear(structure_dim, 1, bias=False) zeroed; forward with einsum; c = 1 + (1-β)(m_eff/n - 1); prior shape checked with an explicit comparison
# expect: full
# %% [hylorada_v2_linear]
class HyLoRADAv2Linear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16, structure_dim=32):
        super().__init__()
        self.base_layer = base_layer
        for q in self.base_layer.parameters():
            q.requires_grad_(False)
        self.scaling = alpha / rank
        self.structure_dim = structure_dim
        out_f, in_f = base_layer.weight.shape
        self.A = nn.Parameter(nn.init.orthogonal_(torch.empty(rank, in_f)))
        self.B = nn.Parameter(torch.zeros(out_f, rank))
        norms = base_layer.weight.detach().norm(dim=1)
        self.m = nn.Parameter(norms.clone())
        self.register_buffer("m0", norms.clone())
        self.gate_logit = nn.Parameter(torch.tensor(0.0))
        self.blend_logit = nn.Parameter(torch.tensor(0.1))
        self.structure_proj = nn.Linear(structure_dim, 1, bias=False)
        nn.init.zeros_(self.structure_proj.weight)

    def forward(self, x, structure_prior=None):
        W, b = self.base_layer.weight, self.base_layer.bias
        update = self.scaling * torch.einsum("...r,or->...o", torch.einsum("...i,ri->...r", x, self.A), self.B)
        if structure_prior is not None:
            if structure_prior.shape != x.shape[:-1] + (self.structure_dim,):
                raise ValueError(f"expected a prior of shape {tuple(x.shape[:-1]) + (self.structure_dim,)}, "
                                 f"got {tuple(structure_prior.shape)}")
            update = (0.5 + torch.sigmoid(self.structure_proj(structure_prior))) * update
        with torch.no_grad():
            n = (W + self.scaling * self.B @ self.A).norm(dim=1)
        gamma, beta = torch.sigmoid(self.gate_logit), torch.sigmoid(self.blend_logit)
        m_eff = self.m0 + gamma * (self.m - self.m0)
        c = 1 + (1 - beta) * (m_eff / n - 1)
        y = c * (torch.einsum("...i,oi->...o", x, W) + update)
        return y if b is None else y + b
