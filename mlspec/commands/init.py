"""`mlspec init [DIR] [--template minimal|churn]`: a runnable project that validates.

Templates are the projects under examples/ (shipped in the wheel as mlspec.templates): the `churn`
template and examples/churn are one source, so whatever the example grows, init writes too.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from mlspec.console import Console
from mlspec.errors import MlspecError

SKIP = {".mlspec", "__pycache__", ".pytest_cache", "plan.json"}


def templates() -> dict[str, Path]:
    root = Path(str(resources.files("mlspec.templates")))
    return {p.name: p for p in sorted(root.iterdir()) if (p / "mlspec.yaml").is_file()}


def run(args, console: Console) -> int:
    available = templates()
    if args.template not in available:
        raise MlspecError(f"no template '{args.template}' (available: {', '.join(available)})")
    src = available[args.template]
    dest = Path(args.project_dir) / (args.dir or ".")
    if dest.exists() and any(dest.iterdir()) and not args.force:
        raise MlspecError(f"{dest} is not empty", hint="choose an empty or new directory, or pass --force")
    schema = Path(str(resources.files("mlspec.schemas").joinpath("mlspec.schema.json"))).resolve()
    written = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part in SKIP for part in rel.parts) or path.suffix == ".pyc":
            continue
        target = dest / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel.as_posix() == "mlspec.yaml":
            lines = path.read_text().splitlines(keepends=True)
            if lines and lines[0].startswith("# yaml-language-server:"):
                lines = lines[1:]
            target.write_text(f"# yaml-language-server: $schema={schema.as_uri()}\n" + "".join(lines))
        else:
            shutil.copyfile(path, target)
        written.append(rel.as_posix())
    gitignore = dest / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text(".mlspec/\n__pycache__/\n")
        written.append(".gitignore")
    console.print(f"Created a '{args.template}' project in {dest} ({len(written)} files). Next:")
    where = "" if str(dest) in (".", "") else f" -C {dest}"
    console.print(f"  mlspec{where} validate\n  mlspec{where} plan\n  mlspec{where} apply --auto-approve")
    return 0
