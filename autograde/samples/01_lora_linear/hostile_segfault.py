# sample: hostile; crashes the Python interpreter with a segmentation fault (reads address 0): the kernel dies, the zero is charged to this submission only
# expect: zero
# status: kernel died
# %% [lora_linear]
import ctypes

ctypes.string_at(0)
