"""LoRA Lab's instructor side: nbgrader settings and the grading pipeline.

    python -m autograde release [ASSIGNMENT ...]
    python -m autograde grade ASSIGNMENT
    python -m autograde feedback ASSIGNMENT
    python -m autograde export [--out grades.csv]

See autograde/README.md for the workflow. (Nothing is imported here: `autograde.submissions`
stays light, and nbgrader loads only when the config or the pipeline is used.)
"""


def __getattr__(name):
    if name == "course_config":
        from .config import course_config
        return course_config
    raise AttributeError(f"module 'autograde' has no attribute {name!r}")


__all__ = ["course_config"]
