# sample: initialises A with DoRA's Kaiming-uniform init (copied from notebook 05) instead of orthogonal rows; everything else is right
# expect: partial
# bug: wrong init of A: HyLoRADA's first change is an orthogonal init (A Aᵀ = I); Kaiming-uniform rows have norm about 0.58 and are not orthogonal
# %% [hylorada_linear]
import math


class HyLoRADALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.rank = rank
        self.scaling = alpha / rank
        in_features, out_features = base_layer.in_features, base_layer.out_features
        self.base_layer.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        norms = base_layer.weight.detach().norm(dim=1)
        self.magnitude = nn.Parameter(norms.clone())
        self.register_buffer("magnitude_init", norms.clone())
        self.magnitude_gate = nn.Parameter(torch.tensor(0.0))
        self.residual_weight = nn.Parameter(torch.tensor(0.1))

    def forward(self, x):
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
        n = V.norm(dim=1).detach()
        gamma = torch.sigmoid(self.magnitude_gate)
        beta = torch.sigmoid(self.residual_weight)
        m_eff = gamma * self.magnitude + (1 - gamma) * self.magnitude_init
        Vx = x @ V.T
        y = (1 - beta) * (m_eff / n) * Vx + beta * Vx
        return y if self.base_layer.bias is None else y + self.base_layer.bias
