# sample: reads "the norm is a constant" as "compute it once": stores ||W||_row from __init__ and divides by it in every forward, so once B moves the direction V / ||W|| is no longer a unit vector and m no longer sets the row lengths; caught by the visible test_forward and test_norm_detached
# expect: partial
# bug: state cached across calls (row norm of W + sBA computed once, from W)
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
        with torch.no_grad():
            norms = base_layer.weight.norm(dim=1)
        self.magnitude = nn.Parameter(norms.clone())
        self.register_buffer("row_norm", norms.clone())           # the constant of the paper

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
        y = (x @ V.T) * (self.magnitude / self.row_norm)
        if self.base_layer.bias is not None:
            y = y + self.base_layer.bias
        return y
