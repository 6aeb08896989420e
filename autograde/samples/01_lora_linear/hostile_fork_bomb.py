# sample: hostile; a fork bomb (sleeping children until fork fails): the sandbox's process limit stops it, the kernel goes on, and the submission is flagged
# expect: zero
# needs: process limit
# flag: hit the process limit
# %% [lora_linear]
import os
import time

children = 0
while True:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(3600)
        os._exit(0)
    children += 1
print("fork failed after", children, "children")
