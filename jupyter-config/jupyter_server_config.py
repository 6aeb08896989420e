"""Jupyter server settings for the course's own JupyterLab: `python3 course.py launch`.

course.py puts this folder first on JUPYTER_CONFIG_PATH for that one command, so what is set
here (with labconfig/ and nbgrader_config.py beside this file) applies to the course's launch
only: your own ~/.jupyter settings still load underneath, and a plain `jupyter lab` does not
see any of it. The instructor's formgrader (`python -m autograde formgrader`) loads this file
first and then changes what differs (autograde/jupyter-config/jupyter_server_config.py).
tests/coursework/test_launch.py starts a server with exactly this configuration and reads its log.
"""
import copy

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

# nbgrader's server extensions for an exchange-based course (Assignment List, Course List)
# and the instructor's formgrader do not apply to a learner who works in notebooks/ of this
# repository: with no exchange directory and no course root they only show errors ("Error
# fetching courses!", "The exchange directory does not exist") and log "No nbgrader_config.py
# file found". They stay installed (the formgrader launch uses them); they are off here.
# Validate (validate_assignment) stays on, with nbgrader_config.py beside this file.
# labconfig/page_config.json hides the matching parts of the JupyterLab interface.
c.ServerApp.jpserver_extensions = {
    "nbgrader.server_extensions.assignment_list": False,
    "nbgrader.server_extensions.course_list": False,
    "nbgrader.server_extensions.formgrader": False,
}


def kernel_language_info():
    """The language_info that ipykernel, the python3 kernel of this environment (run by this
    same interpreter), sends in its kernel_info_reply."""
    from ipykernel.ipkernel import IPythonKernel

    return copy.deepcopy(IPythonKernel.language_info)


class CourseContentsManager(AsyncLargeFileManager):
    """The default contents manager, except that a python3 notebook is handed to JupyterLab
    with the language_info its kernel is about to report.

    JupyterLab copies the kernel's language_info into the notebook as soon as the kernel
    starts and marks the notebook modified when it differs in anything (deep equality),
    including "version", the Python version. The course's notebooks store the metadata of
    one Python (tests/coursework/test_launch.py); on any other, opening a notebook would mark it
    modified and autosave would rewrite it. Nothing else is touched: what is on disk only
    changes when you save, and then with what your kernel reported anyway. (A contents
    manager set in your own Jupyter config is replaced by this one for the course's launch.)
    """

    def mark_trusted_cells(self, nb, path=""):
        """A notebook without outputs has nothing that trust would hide (only outputs are
        checked: HTML and JavaScript from an unknown source): its cells are marked trusted
        without the "Notebook ... is not trusted" warning that every fresh clone's notebook
        would log. A notebook with outputs is checked against its signature as always."""
        if not any(cell.get("outputs") for cell in nb.get("cells", [])):
            self.notary.mark_cells(nb, True)
            return
        super().mark_trusted_cells(nb, path)

    async def get(self, path, content=True, type=None, format=None, **kwargs):
        model = await super().get(path, content=content, type=type, format=format, **kwargs)
        if model.get("type") == "notebook" and model.get("content"):
            match_kernel_metadata(model["content"])
        return model


def match_kernel_metadata(nb):
    """Set a python3 notebook's language_info to the kernel's (other notebooks: untouched)."""
    metadata = nb.get("metadata", {})
    kernelspec = metadata.get("kernelspec") or {}
    language_info = metadata.get("language_info") or {}
    if kernelspec.get("name") == "python3" and language_info.get("name", "python") == "python":
        metadata["language_info"] = kernel_language_info()
    return nb


c.ServerApp.contents_manager_class = CourseContentsManager

# The server's kernels get CurveZMQ keys (their kernelspec, ipykernel's, declares support):
# otherwise ipykernel warns at every start that its TCP sockets on loopback carry code and
# outputs in plain text, readable by other users of the machine.
c.MappingKernelManager.transport_encryption = "auto"
