"""Jupyter server settings for the instructor's formgrader: `python -m autograde formgrader`.

That command puts this folder (alone) first on JUPYTER_CONFIG_PATH, so these settings, with
labconfig/ and nbgrader_config.py beside this file, apply to that launch only. They start
from the course's own launch settings (../../jupyter-config/jupyter_server_config.py: the
contents manager that keeps notebooks unmodified when opened) and change what differs for
an instructor: the formgrader is on, and shows each answer's model answer and rubric with its
maths rendered offline (autograde/formgrade.py). Assignment List and Course List stay off: they need an
nbgrader exchange, which this course does not use (submissions go into autograde/course/).
"""
from pathlib import Path

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)
load_subconfig(str(Path(__file__).resolve().parents[2]  # noqa: F821 (as get_config)
                   / "jupyter-config" / "jupyter_server_config.py"))

c.ServerApp.jpserver_extensions = {
    "nbgrader.server_extensions.assignment_list": False,
    "nbgrader.server_extensions.course_list": False,
    "nbgrader.server_extensions.formgrader": True,
    "nbgrader.server_extensions.validate_assignment": True,
    "jupyter_server_mathjax": True,  # MathJax for the formgrader's pages, served offline
    "autograde.formgrade": True,  # model answers and rubrics on the submission page
}
# The browser opens on the formgrader (JupyterLab is at /lab, with Nbgrader -> Formgrader).
c.ServerApp.default_url = c.LabApp.default_url = "/formgrader"
