# sample: borrows lorakit's reference layer instead of implementing it
# expect: zero
# fails: not reference
# %% [hylorada_linear]
import lorakit


class HyLoRADALinear(lorakit.HyLoRADALinear):
    pass
