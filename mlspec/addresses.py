"""Resource addresses: ``kind.name``, ``step.train[C=0.1]``, ``step.prepare.train`` (an output),
``step.train[*].model`` (the gather of every instance's output)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Mapping

from mlspec.core.frozen import fast_init

KINDS = ("dataset", "step", "model", "deployment", "monitor", "trigger")
NAME = r"[A-Za-z][A-Za-z0-9_-]*"
_ADDR = re.compile(rf"^(?P<kind>{'|'.join(KINDS)})\.(?P<name>{NAME})(?:\[(?P<sel>[^\]]*)\])?(?:\.(?P<output>{NAME}))?$")


@fast_init
@dataclass(frozen=True)
class Address:
    kind: str
    name: str
    selector: tuple = ()  # (("C", "0.1"), ...) sorted; values as canonical strings
    output: str = ""
    gather: bool = False  # ``[*]``: every instance of a matrix step

    @property
    def resource(self) -> str:
        """The resource part without the output: ``step.train[C=0.1]`` (``step.train[*]`` for a gather)."""
        if self.gather:
            return f"{self.kind}.{self.name}[*]"
        return f"{self.kind}.{self.name}{format_selector(self.selector)}"

    def __str__(self) -> str:
        return self.resource + (f".{self.output}" if self.output else "")


def format_value(v) -> str:
    """Canonical text of a matrix value inside an address."""
    if isinstance(v, str):
        return v
    return json.dumps(v)


def format_selector(coords) -> str:
    items = coords.items() if isinstance(coords, Mapping) else coords
    items = sorted((k, v if isinstance(v, str) else format_value(v)) for k, v in items)
    return "[" + ",".join(f"{k}={v}" for k, v in items) + "]" if items else ""


def instance_address(name: str, coords: Mapping) -> str:
    return f"step.{name}{format_selector({k: format_value(v) for k, v in coords.items()})}"


def parse_address(text: str) -> Address:
    """Parse an address; raises ValueError with a message saying what is expected."""
    m = _ADDR.match(str(text).strip())
    if not m:
        raise ValueError(f"'{text}' is not an address (expected KIND.NAME[.OUTPUT] with KIND one of "
                         f"{', '.join(KINDS)}, e.g. dataset.customers or step.prepare.train)")
    sel = ()
    if m.group("sel") is not None and m.group("sel").strip() == "*":
        return Address(m.group("kind"), m.group("name"), (), m.group("output") or "", gather=True)
    if m.group("sel") is not None:
        pairs = []
        for part in m.group("sel").split(","):
            if "=" not in part:
                raise ValueError(f"'{text}': a selector has the form [key=value,...]")
            k, v = part.split("=", 1)
            pairs.append((k.strip(), v.strip()))
        sel = tuple(sorted(pairs))
    return Address(m.group("kind"), m.group("name"), sel, m.group("output") or "")
