"""Model gate expressions: ``">= 0.85"``, ``"> production"``, ``">= production - 0.01"``."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

_GATE = re.compile(
    r"^\s*(?P<op>>=|<=|==|!=|>|<)\s*"
    r"(?:(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<alias>[A-Za-z][A-Za-z0-9_-]*)(?:\s*(?P<sign>[-+])\s*(?P<delta>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))?)\s*$")
OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq, "!=": operator.ne}


@dataclass(frozen=True)
class Gate:
    op: str
    value: float | None = None  # a constant threshold
    alias: str = ""  # or compare with the model version holding this alias
    delta: float = 0.0

    def passes(self, metric: float, alias_value: float | None = None) -> bool:
        if self.alias:
            if alias_value is None:  # nothing to beat yet: the first version passes
                return True
            return OPS[self.op](metric, alias_value + self.delta)
        return OPS[self.op](metric, self.value)


def parse_gate(text) -> Gate:
    """Parse a gate; raises ValueError naming the expected grammar."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"a gate is a string like \">= 0.85\" or \"> production\", got {text!r}")
    m = _GATE.match(str(text))
    if not m:
        raise ValueError(f"cannot parse gate {str(text)!r}: expected OP VALUE with OP one of >=, >, <=, <, ==, != "
                         "and VALUE a number, an alias (production) or ALIAS +/- NUMBER, "
                         "e.g. \">= 0.85\", \"> production\", \">= production - 0.01\"")
    if m.group("num") is not None:
        return Gate(m.group("op"), float(m.group("num")))
    delta = float(m.group("delta") or 0) * (-1 if m.group("sign") == "-" else 1)
    return Gate(m.group("op"), None, m.group("alias"), delta)
