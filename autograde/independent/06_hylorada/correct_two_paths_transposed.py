# sample: A stored transposed as (in, rank) with orthonormal columns (orthogonal_ on the (in, rank) tensor, so A = A_tᵀ has orthonormal rows), B as (rank, out), m_init a buffer; blend logit initialised to log(0.1/0.9) so that β starts at 0.1 (allowed: initial values are up to the student); forward computes the DoRA and LoRA paths explicitly with V formed as a matrix and blends them
# expect: full
# %% [hylorada_linear]
import math


class HyLoRADALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.rank = rank
        self.scaling = alpha / rank
        in_features, out_features = base_layer.in_features, base_layer.out_features
        for q in self.base_layer.parameters():
            q.requires_grad = False
        self.A_t = nn.Parameter(nn.init.orthogonal_(torch.empty(in_features, rank)))
        self.B_t = nn.Parameter(torch.zeros(rank, out_features))
        norms = base_layer.weight.detach().norm(dim=1)
        self.m = nn.Parameter(norms.clone())
        self.register_buffer("m_init", norms.clone())
        self.g = nn.Parameter(torch.tensor(0.0))
        self.b_res = nn.Parameter(torch.tensor(math.log(0.1 / 0.9)))

    def forward(self, x):
        b = self.base_layer.bias
        V = self.base_layer.weight + self.scaling * (self.A_t @ self.B_t).T      # (out, in)
        Vx = x @ V.T
        n = V.norm(dim=1).detach()
        gamma, beta = torch.sigmoid(self.g), torch.sigmoid(self.b_res)
        m_eff = gamma * self.m + (1 - gamma) * self.m_init
        dora = m_eff / n * Vx
        lora = Vx
        if b is not None:
            dora, lora = dora + b, lora + b
        return (1 - beta) * dora + beta * lora
