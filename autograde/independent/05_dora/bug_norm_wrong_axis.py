# sample: magnitude initialised correctly to W.norm(dim=1), but forward normalises V with V.norm(dim=0, keepdim=True) (the paper's "column" norm taken literally) and multiplies the rows by m
# expect: partial
# bug: norm over the wrong axis: dim=0 normalises the columns of the (out, in) weight (one norm per input), so the layer is not m ⊙ V/‖V‖_row and not even the pretrained layer at init; DoRA's norm is one per output row, dim=1
# %% [dora_linear]
class DoRALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        in_features = base_layer.in_features
        out_features = base_layer.out_features
        self.base_layer.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.magnitude = nn.Parameter(base_layer.weight.detach().norm(dim=1).clone())

    def forward(self, x):
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
        direction = V / V.norm(dim=0, keepdim=True).detach()
        y = x @ (self.magnitude[:, None] * direction).T
        return y if self.base_layer.bias is None else y + self.base_layer.bias
