"""nbgrader settings for the course's own JupyterLab (`python3 course.py launch`).

The notebook toolbar's Validate button (nbgrader's validate_assignment extension) runs the
open notebook top to bottom with these settings; nbgrader finds this file because course.py
puts this folder on JUPYTER_CONFIG_PATH. (The instructor's settings are in
autograde/nbgrader_config.py.)
"""
import os

from autograde.config import CELL_TIMEOUT

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

# A cell may run as long as it may when the notebook is graded (nbgrader's default: 30 s).
c.Execute.timeout = CELL_TIMEOUT

# Validate's kernel talks over local (ipc) sockets in the Jupyter runtime folder (readable by
# you alone) instead of TCP on loopback, which ipykernel warns about at every start.
# (Windows has no ipc transport.)
if os.name != "nt":
    c.KernelManager.transport = "ipc"
