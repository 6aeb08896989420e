# sample: nn.Parameter A (Kaiming-uniform), B (zeros) and magnitude m = W.norm(dim=1); forward forms V = W + sBA, takes its row norms under torch.no_grad, applies F.linear(x, V) scaled by m / n and adds the bias last
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
        W = base_layer.weight
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, dtype=W.dtype, device=W.device))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, dtype=W.dtype, device=W.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.magnitude = nn.Parameter(W.detach().norm(dim=1).clone())       # (out,)
        base_layer.requires_grad_(False)

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        V = self.base_layer.weight + self.scaling * (self.lora_B @ self.lora_A)   # (out, in)
        with torch.no_grad():
            n = V.norm(dim=1)                                                    # (out,)
        y = F.linear(x, V) * (self.magnitude / n)
        if self.base_layer.bias is not None:
            y = y + self.base_layer.bias
        return y
