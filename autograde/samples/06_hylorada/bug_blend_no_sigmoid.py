# sample: reads residual_weight = 0.1 as β itself (the sigmoid omitted), as the seed's prose suggests
# expect: partial
# fails: forward
# %% [hylorada_linear]
class HyLoRADALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(nn.init.orthogonal_(torch.empty(rank, base_layer.in_features)))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        norms = base_layer.weight.detach().norm(dim=1)
        self.magnitude = nn.Parameter(norms.clone())
        self.register_buffer("magnitude_init", norms.clone())
        self.magnitude_gate = nn.Parameter(torch.tensor(0.0))
        self.residual_weight = nn.Parameter(torch.tensor(0.1))

    def forward(self, x):
        W = self.base_layer.weight
        V = W + self.scaling * self.lora_B @ self.lora_A
        n = V.norm(dim=1).detach()
        gate = torch.sigmoid(self.magnitude_gate)
        m_eff = gate * self.magnitude + (1 - gate) * self.magnitude_init
        beta = self.residual_weight                      # "residual weight 0.1"
        z = x @ V.T
        y = (1 - beta) * z * (m_eff / n) + beta * z
        return y if self.base_layer.bias is None else y + self.base_layer.bias
