# sample: hostile; ignores SIGINT and loops forever, so the interrupt at the time limit does nothing: the notebook stops there with a zero, and the next student is unaffected
# expect: zero
# status: timed out
# %% [lora_linear]
import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
while True:
    pass
