"""nbgrader configuration of LoRA Lab, for plain `nbgrader ...` commands run from autograde/.

    cd autograde
    nbgrader generate_assignment 01_lora_linear --force
    nbgrader autograde 01_lora_linear
    jupyter lab --ServerApp.root_dir=..     (then Nbgrader -> Formgrader)

All settings come from autograde/config.py (course_config), shared with `python -m autograde`
and the tests: the course root is the repository (solutions/ -> notebooks/), and nbgrader's
working folders and gradebook live in autograde/course/ (gitignored).
"""
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from autograde.config import apply_kernel_env, course_config  # noqa: E402

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)
# The formgrader opens the gradebook in this folder and fails ("unable to open database
# file") while it does not exist, as on a fresh clone; an empty gradebook is created in it.
(_ROOT / "autograde" / "course").mkdir(exist_ok=True)
c.merge(course_config(_ROOT, _ROOT / "autograde" / "course"))
apply_kernel_env()  # grading kernels inherit these (PYTHONHASHSEED=0)
