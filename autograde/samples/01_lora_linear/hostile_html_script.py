# sample: hostile; displays HTML with a script, an event handler and an iframe, hoping to run code in the feedback page that students and instructors open: the feedback is sanitized
# expect: zero
# %% [lora_linear]
from IPython.display import HTML, display

display(HTML("<script>document.title = 'loralab-xss'</script>"
             "<img src=x onerror=\"document.title = 'loralab-xss'\">"
             "<iframe srcdoc=\"<script>parent.document.title = 'loralab-xss'</script>\"></iframe>"))
