"""Write a synthetic StackOverflow dump: data/data.xml, one <row .../> per post.

Stands in for the download of DVC's example: about 20 % of the posts are tagged <python>, and their
words lean towards Python's vocabulary, so a bag-of-words model has something to learn (but not
everything: the vocabularies overlap).

Usage: python src/generate.py OUTPUT_XML   (reads generate.rows and generate.seed from params.yaml)
"""

import random
import sys
from xml.sax.saxutils import quoteattr

import yaml

PYTHON = ("python pandas numpy django flask pip import def self list dict tuple lambda dataframe "
          "virtualenv pytest decorator generator comprehension asyncio matplotlib").split()
OTHER = ("java javascript react node spring maven php laravel css html jquery sql mysql swift ios "
         "android kotlin rust cargo golang typescript angular dotnet linq").split()
COMMON = ("how to get the value of a file from string array loop error function class object why is "
          "not working when I use my code in this problem with return type list convert best way "
          "call method variable data print output test install run server").split()
# identifiers people paste from their code: the long tail of the vocabulary, which featurize.max_features cuts
IDENTIFIERS = [f"{a}_{b}" for a in "user item file node key row col page order data".split()
               for b in "id name count path list map size type info config".split()]
OTHER_TAGS = ["java", "javascript", "php", "c#", "android", "sql", "css", "ios", "rust", "go"]


def post(rng: random.Random, python: bool) -> tuple[str, str, str]:
    topic = PYTHON if python else OTHER

    def words(n: int) -> str:
        out = []
        for _ in range(n):
            r = rng.random()
            if r < 0.12:
                out.append(rng.choice(topic))
            elif r < 0.15:  # a little noise from the other side
                out.append(rng.choice(OTHER if python else PYTHON))
            elif r < 0.30:
                out.append(rng.choice(IDENTIFIERS))
            else:
                out.append(rng.choice(COMMON))
        return " ".join(out)

    title = words(rng.randint(4, 9)).capitalize() + "?"
    body = "<p>" + words(rng.randint(15, 45)) + "</p>"
    if python:
        tags = "<python>" + ("<" + rng.choice(["pandas", "django", "numpy", "flask"]) + ">"
                             if rng.random() < 0.6 else "")
    else:
        tags = "<" + rng.choice(OTHER_TAGS) + ">"
    return title, body, tags


def main() -> None:
    out = sys.argv[1]
    with open("params.yaml") as fh:
        params = yaml.safe_load(fh)["generate"]
    rng = random.Random(params["seed"])
    with open(out, "w", encoding="utf-8") as fh:
        fh.write('<?xml version="1.0" encoding="utf-8"?>\n<posts>\n')
        for pid in range(1, params["rows"] + 1):
            title, body, tags = post(rng, python=rng.random() < 0.2)
            fh.write(f'  <row Id="{pid}" PostTypeId="1" Title={quoteattr(title)} Body={quoteattr(body)} '
                     f"Tags={quoteattr(tags)} />\n")
        fh.write("</posts>\n")


if __name__ == "__main__":
    main()
