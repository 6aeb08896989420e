# sample: correct; self-contained with nn.Linear adapters, base_layer(x) plus the rescaled remainder
# expect: full
# %% [hylorada_v2_linear]
class HyLoRADAv2Linear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16, structure_dim=32):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.lora_A = nn.Linear(base_layer.in_features, rank, bias=False)
        nn.init.orthogonal_(self.lora_A.weight)
        self.lora_B = nn.Linear(rank, base_layer.out_features, bias=False)
        nn.init.zeros_(self.lora_B.weight)
        self.magnitude = nn.Parameter(base_layer.weight.detach().norm(dim=1))
        self.register_buffer("magnitude_init", self.magnitude.detach().clone())
        self.magnitude_gate = nn.Parameter(torch.tensor(0.0))
        self.residual_weight = nn.Parameter(torch.tensor(0.1))
        self.scale_from_structure = nn.Linear(structure_dim, 1, bias=False)
        nn.init.zeros_(self.scale_from_structure.weight)

    def forward(self, x, structure_prior=None):
        if structure_prior is not None and structure_prior.shape[:-1] != x.shape[:-1]:
            raise ValueError(f"structure_prior must be (B, T, d) for x {tuple(x.shape)}, got {tuple(structure_prior.shape)}")
        W = self.base_layer.weight
        with torch.no_grad():
            n = (W + self.scaling * self.lora_B.weight @ self.lora_A.weight).norm(dim=1)
        gamma = torch.sigmoid(self.magnitude_gate)
        beta = torch.sigmoid(self.residual_weight)
        m_eff = gamma * self.magnitude + (1 - gamma) * self.magnitude_init
        c = (1 - beta) * m_eff / n + beta
        update = self.scaling * self.lora_B(self.lora_A(x))
        if structure_prior is not None:
            update = update * (0.5 + torch.sigmoid(self.scale_from_structure(structure_prior)))
        # c ⊙ (W x + u) + b  =  base(x) + (c − 1) ⊙ W x + c ⊙ u
        return self.base_layer(x) + (c - 1) * (x @ W.T) + c * update
