# sample: A as a bias-free nn.Linear with orthogonal_ rows, B zeros; m_init not stored but recomputed from the frozen W at every call; scalars of shape (1,); forward as one row rescaling c = (1-β)·m_eff/n + β applied to W x + s·B(A x) (no V applied to x), bias added once
# expect: full
# %% [hylorada_linear]
class HyLoRADALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.rank = rank
        self.scaling = alpha / rank
        in_features, out_features = base_layer.in_features, base_layer.out_features
        self.base_layer.requires_grad_(False)
        self.down = nn.Linear(in_features, rank, bias=False)
        nn.init.orthogonal_(self.down.weight)
        self.up = nn.Linear(rank, out_features, bias=False)
        nn.init.zeros_(self.up.weight)
        self.magnitude = nn.Parameter(base_layer.weight.detach().norm(dim=1).clone())
        self.gate_logit = nn.Parameter(torch.zeros(1))
        self.blend_logit = nn.Parameter(torch.full((1,), 0.1))

    def forward(self, x):
        W, b = self.base_layer.weight, self.base_layer.bias
        with torch.no_grad():
            n = (W + self.scaling * self.up.weight @ self.down.weight).norm(dim=1)
            m_init = W.norm(dim=1)
        gamma = torch.sigmoid(self.gate_logit)
        beta = torch.sigmoid(self.blend_logit)
        m_eff = gamma * self.magnitude + (1 - gamma) * m_init
        c = (1 - beta) * m_eff / n + beta                          # (out,)
        y = c * (F.linear(x, W) + self.scaling * self.up(self.down(x)))
        return y if b is None else y + b
