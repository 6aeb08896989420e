# sample: registers the magnitude as a buffer (register_buffer) instead of an nn.Parameter, so m is saved and moved with the module but never trains: the layer is plain LoRA with a renormalised direction; caught by the visible test_frozen and test_gradients
# expect: partial
# bug: magnitude not trainable (buffer instead of Parameter)
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
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.base_layer.requires_grad_(False)
        self.register_buffer("magnitude", base_layer.weight.detach().norm(dim=1).clone())

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
        with torch.no_grad():
            n = V.norm(dim=1)
        y = F.linear(x, V) * (self.magnitude / n)
        if self.base_layer.bias is not None:
            y = y + self.base_layer.bias
        return y
