"""The Hydra path: compose with Hydra, resolve interpolations into plain data, find sensitive values."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mlspec.errors import Diagnostic, SpecError
from mlspec.yamlsrc import YamlSource
from mlspec.compose.groups import group_yaml_error
from mlspec.compose.hydra_errors import hydra_diag
from mlspec.compose.sources import SourceMap, format_path


_CMD_PLACEHOLDER = re.compile(r"(?<!\\)\$\{(inputs|outputs|params)\.")


def hydra_compose(config_dir: Path, name: str, overrides: list[str], shown: str, *,
                   primary: YamlSource | None = None, project_dir: Path | None = None,
                   group_names: set | frozenset = frozenset()):
    import warnings

    import yaml
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with warnings.catch_warnings():
            # Hydra warns, naming its own source file, when the defaults list has no `_self_`; the order is
            # documented (the spec file comes last), so the warning is noise with an absolute path
            warnings.filterwarnings("ignore", message=".*Defaults list is missing `_self_`")
            with initialize_config_dir(config_dir=str(config_dir), version_base=None, job_name="mlspec"):
                cfg = hydra_compose(config_name=name, overrides=overrides, return_hydra_config=True)
    except yaml.YAMLError as exc:  # a config group file is not valid YAML (the root spec was checked before)
        raise group_yaml_error(exc, project_dir or config_dir) from None
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise SpecError([hydra_diag(exc, overrides, shown, primary, group_names)]) from None
    except (TypeError, KeyError, IndexError, AttributeError, AssertionError) as exc:
        # Hydra itself fails on some inputs: `~steps.a.outputs.0` (TypeError deleting a list item), a
        # defaults entry with an empty group name (AssertionError)
        import traceback

        frames = {f.name for f in traceback.extract_tb(exc.__traceback__)}
        user = [o for o in overrides[1:] if o != "+backend=local"]
        if "_apply_overrides_to_config" not in frames or not user:
            first = (str(exc).strip().splitlines() or ["assertion"])[0]  # one line, whatever Hydra's assert says
            raise SpecError([Diagnostic(shown, 0, 0, "defaults", "compose-error",
                                        f"Hydra cannot compose the spec ({type(exc).__name__}: {first}); "
                                        "check the `defaults:` list")]) from None
        where = f"override '{user[0]}'" if len(user) == 1 else f"override '{' '.join(user)}'"
        raise SpecError([Diagnostic(where, 0, 0, "", "bad-override",
                                    f"cannot apply this override ({type(exc).__name__}: {exc}); a list item "
                                    "cannot be deleted on its own: set the whole list instead, e.g. key=[a,b]")]) from None
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    OmegaConf.set_struct(cfg, False)
    del cfg["hydra"]
    return cfg, choices


def to_data(cfg, smap: SourceMap) -> tuple[dict, list, list]:
    """Resolve interpolations into plain data; every failed interpolation is a located diagnostic.

    A failed interpolation's key is set to None so that the rest of the spec can still be checked and
    the user sees every problem at once; the diagnostics come back with the data.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    raw = OmegaConf.to_container(cfg, resolve=False)
    interp: list[tuple] = []
    _find_interpolations(raw, (), interp)
    if not interp:
        return raw, [], []
    all_interp = list(interp)
    # ${inputs.X}, ${outputs.X}, ${params.X} in a step's cmd are filled in at run time, not by OmegaConf
    kept = []
    for path, text in interp:
        if len(path) == 3 and path[0] == "steps" and path[2] == "cmd":
            escaped = _CMD_PLACEHOLDER.sub(r"\\${\1.", text)
            cfg[path[0]][path[1]][path[2]] = escaped
            if "${" not in _CMD_PLACEHOLDER.sub("", text):
                continue
        kept.append((path, text))
    interp = kept
    diags = []
    for path, text in interp:
        node_parent = cfg
        try:
            for part in path[:-1]:
                node_parent = node_parent[part]
            node_parent[path[-1]]  # resolves this interpolation
        except OmegaConfBaseException as exc:
            diags.append(_interp_diag(exc, path, text, smap))
    failed = {format_path(p) for p, _t in interp} & {d.path for d in diags}
    for path, _text in interp:
        if format_path(path) in failed:
            parent = cfg
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]] = None
    try:
        data = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        if diags:
            raise SpecError(diags) from None
        raise
    return data, all_interp, diags


def _interp_diag(exc, path, text, smap: SourceMap) -> Diagnostic:
    msg = str(exc).strip().splitlines()[0]
    m = re.search(r"oc\.env:\s*([A-Za-z_][A-Za-z0-9_]*)", text)
    if "Environment variable" in msg and m:
        message = (f"environment variable '{m.group(1)}' is not set (from {text}); set it, or give a "
                   f"default: ${{oc.env:{m.group(1)},DEFAULT}}")
        code = "unset-env"
    elif "not found" in msg.lower() or "missing" in msg.lower():
        ref = re.search(r"\$\{([^}]*)\}", text)
        message = f"interpolation {text} points at a missing key" + (f" '{ref.group(1)}'" if ref else "")
        code = "bad-interpolation"
    else:
        message = f"cannot resolve {text}: {msg}"
        code = "bad-interpolation"
    return smap.diag(path, code, message)


def _find_interpolations(node: Any, path: tuple, out: list) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _find_interpolations(v, path + (k,), out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _find_interpolations(v, path + (i,), out)
    elif isinstance(node, str) and "${" in node:
        out.append((path, node))
