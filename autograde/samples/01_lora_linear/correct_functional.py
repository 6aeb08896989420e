# sample: correct; F.linear with a ParameterList, merge via .data under no_grad
# expect: full
# %% [lora_linear]
import torch.nn.functional as F


class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        for p in self.base_layer.parameters():
            p.requires_grad = False
        A = torch.empty(rank, base_layer.in_features)
        nn.init.kaiming_uniform_(A, a=5 ** 0.5)
        self.factors = nn.ParameterList([nn.Parameter(A),
                                         nn.Parameter(torch.zeros(base_layer.out_features, rank))])

    def forward(self, x):
        A, B = self.factors
        return self.base_layer(x) + self.scaling * F.linear(F.linear(x, A), B)
# %% [merge_lora]
def merge_lora(layer):
    A, B = layer.factors
    with torch.no_grad():
        w = layer.base_layer.weight.data + layer.scaling * torch.matmul(B, A)
    out = nn.Linear(layer.base_layer.in_features, layer.base_layer.out_features,
                    bias=layer.base_layer.bias is not None)
    out.weight.data = w.clone()
    if layer.base_layer.bias is not None:
        out.bias.data = layer.base_layer.bias.data.clone()
    return out
