# sample: writes everything itself as a plain nn.Module (no subclass): A (rank, in) orthogonal, B zeros, m and a buffer m0 at the row norms, gate and blend logits 0 and 0.1 as in the given v1, and w as an nn.Parameter of shape (structure_dim,) initialised to zeros; the factor is 0.5 + sigmoid(P @ w)[..., None]; the row factor c is computed from the detached row norms of W + sBA exactly as v1 does; a wrong prior shape raises ValueError
# expect: full
# %% [hylorada_v2_linear]
class HyLoRADAv2Linear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16, structure_dim=32):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.structure_dim = structure_dim
        out_f, in_f = base_layer.weight.shape
        kw = dict(dtype=base_layer.weight.dtype, device=base_layer.weight.device)
        self.A = nn.Parameter(nn.init.orthogonal_(torch.empty(rank, in_f, **kw)))
        self.B = nn.Parameter(torch.zeros(out_f, rank, **kw))
        norms = base_layer.weight.detach().norm(dim=1)
        self.m = nn.Parameter(norms.clone())
        self.register_buffer("m0", norms.clone())
        self.gate_logit = nn.Parameter(torch.tensor(0.0, **kw))
        self.blend_logit = nn.Parameter(torch.tensor(0.1, **kw))
        self.w = nn.Parameter(torch.zeros(structure_dim, **kw))

    def row_factor(self):
        with torch.no_grad():
            n = (self.base_layer.weight + self.scaling * self.B @ self.A).norm(dim=1)
        gamma = torch.sigmoid(self.gate_logit)
        beta = torch.sigmoid(self.blend_logit)
        m_eff = gamma * self.m + (1 - gamma) * self.m0
        return (1 - beta) * m_eff / n + beta

    def forward(self, x, structure_prior=None):
        # x: (B, T, in_features); structure_prior: (B, T, structure_dim) or None (then: v1)
        update = self.scaling * (x @ self.A.T) @ self.B.T
        if structure_prior is not None:
            if structure_prior.shape != x.shape[:-1] + (self.structure_dim,):
                raise ValueError(f"expected a prior of shape {tuple(x.shape[:-1]) + (self.structure_dim,)}, "
                                 f"got {tuple(structure_prior.shape)}")
            update = (0.5 + torch.sigmoid(structure_prior @ self.w))[..., None] * update
        y = self.row_factor() * (x @ self.base_layer.weight.T + update)
        if self.base_layer.bias is not None:
            y = y + self.base_layer.bias
        return y
