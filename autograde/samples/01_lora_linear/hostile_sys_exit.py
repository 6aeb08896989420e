# sample: hostile; calls sys.exit() in the answer cell: IPython turns it into an error in that cell, and the tests after it run (and fail)
# expect: zero
# %% [lora_linear]
import sys

sys.exit(3)
