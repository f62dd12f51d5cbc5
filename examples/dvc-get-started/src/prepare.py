"""Split the posts into data/prepared/train.tsv and test.tsv: one `id<TAB>label<TAB>text` line per post,
label 1 when the post is tagged <python>.

Usage: python src/prepare.py INPUT_XML OUTPUT_DIR   (reads prepare.split and prepare.seed from params.yaml)
"""

import os
import random
import sys
import xml.etree.ElementTree as ET

import yaml


def clean(text: str) -> str:
    return " ".join(text.replace("<p>", " ").replace("</p>", " ").split())


def main() -> None:
    src, out = sys.argv[1], sys.argv[2]
    with open("params.yaml") as fh:
        params = yaml.safe_load(fh)["prepare"]
    rng = random.Random(params["seed"])
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "train.tsv"), "w", encoding="utf-8") as train, \
            open(os.path.join(out, "test.tsv"), "w", encoding="utf-8") as test:
        for row in ET.parse(src).getroot().iter("row"):
            label = int("<python>" in row.get("Tags", ""))
            text = clean(row.get("Title", "") + " " + row.get("Body", ""))
            dest = test if rng.random() < params["split"] else train
            dest.write(f"{row.get('Id')}\t{label}\t{text}\n")


if __name__ == "__main__":
    main()
