"""Write each row of the table to a file of its own in the output directory."""
import json
import os
import sys

table, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
for i, row in enumerate(json.load(open(table))["rows"]):
    with open(os.path.join(out, f"part-{i}.txt"), "w") as fh:
        fh.write(row + "\n")
