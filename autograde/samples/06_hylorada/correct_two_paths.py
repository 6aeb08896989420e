# sample: nn.Linear modules as A and B; the seed's two paths written out, each with the bias, then blended
# expect: full
# %% [hylorada_linear]
class HyLoRADALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        for p in self.base_layer.parameters():
            p.requires_grad = False
        self.scaling = alpha / rank
        self.down = nn.Linear(base_layer.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base_layer.out_features, bias=False)
        nn.init.orthogonal_(self.down.weight)
        nn.init.zeros_(self.up.weight)
        self.m = nn.Parameter(base_layer.weight.detach().norm(dim=1).clone())
        self.register_buffer("m0", self.m.detach().clone())
        self.g = nn.Parameter(torch.zeros(()))
        self.b_res = nn.Parameter(torch.full((), 0.1))

    def forward(self, x):
        delta = self.scaling * self.up(self.down(x))
        lora_out = self.base_layer(x) + delta
        V = self.base_layer.weight + self.scaling * self.up.weight @ self.down.weight
        norm = V.norm(dim=1).detach()
        gate = torch.sigmoid(self.g)
        m_eff = self.m * gate + self.m0 * (1 - gate)
        dora_out = (x @ V.T) * (m_eff / norm)
        if self.base_layer.bias is not None:
            dora_out = dora_out + self.base_layer.bias
        beta = torch.sigmoid(self.b_res)
        return (1 - beta) * dora_out + beta * lora_out
