# sample: bias-free nn.Linear adapters and a PEFT-style factored forward: (m / n) * (W x + s B(A x)) + b, with n = ||W + sBA||_row computed from detached weights, so V is only built for the norm
# expect: full
# %% [dora_linear]
class DoRALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer  # the frozen nn.Linear; weight (out_features, in_features)
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        in_features = base_layer.in_features
        out_features = base_layer.out_features
        for prm in self.base_layer.parameters():
            prm.requires_grad = False
        W = base_layer.weight
        self.lora_A = nn.Linear(in_features, rank, bias=False, device=W.device, dtype=W.dtype)
        self.lora_B = nn.Linear(rank, out_features, bias=False, device=W.device, dtype=W.dtype)
        nn.init.zeros_(self.lora_B.weight)          # lora_A keeps nn.Linear's kaiming-uniform init
        with torch.no_grad():
            m = torch.linalg.vector_norm(W, dim=1)
        self.magnitude = nn.Parameter(m)

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        W = self.base_layer.weight
        A, B = self.lora_A.weight, self.lora_B.weight
        n = (W + self.scaling * B.detach() @ A.detach()).norm(dim=1)        # constant in backward
        y = F.linear(x, W) + self.scaling * self.lora_B(self.lora_A(x))
        y = (self.magnitude / n) * y
        b = self.base_layer.bias
        return y if b is None else y + b
