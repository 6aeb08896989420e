"""nbgrader settings of the instructor's formgrader (`python -m autograde formgrader`).

The course comes from the environment that command sets: LORALAB_COURSE_ROOT (the folder
holding solutions/ and notebooks/), LORALAB_WORK_DIR (submitted/, autograded/, feedback/,
the gradebook) and LORALAB_GRADEBOOK_URL when the gradebook is not the SQLite file there.
The formgrader's submission page with model answers, rubrics and offline maths is the
server extension autograde.formgrade (enabled in jupyter_server_config.py beside this file).
"""
import os
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from autograde.config import apply_kernel_env, course_config  # noqa: E402

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)
_root = Path(os.environ.get("LORALAB_COURSE_ROOT") or _REPO)
_work = Path(os.environ.get("LORALAB_WORK_DIR") or _root / "autograde" / "course")
_work.mkdir(parents=True, exist_ok=True)  # the formgrader fails while its gradebook's folder is missing
c.merge(course_config(_root, _work))

# The formgrader's "Manage Assignments" page would dump this configuration, and log a warning
# that it cannot: it holds classes (the grading preprocessors).
c.FormgradeExtension.debug = False
apply_kernel_env()  # kernels started from here (Validate) get what grading kernels get
