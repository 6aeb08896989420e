# sample: hostile; starts a detached background process (new session, double fork) that would outlive the kernel and later meddle with the course: it dies with the sandbox and is reported
# expect: zero
# needs: isolation
# flag: still running when the notebook ended
# %% [lora_linear]
import subprocess
import sys

subprocess.Popen([sys.executable, "-c", "import os, time\n# loralab-hostile-daemon\n"
                  "if os.fork():\n    os._exit(0)\nos.setsid()\nwhile True:\n    time.sleep(1)"],
                 start_new_session=True)
