"""Sphinx extension: `configuration.md`, the configuration reference, generated at every build.

Each key's default and its meaning are defined once, in the shipped YAML beside the key (conf/:
the comment at the end of its line, or the comment lines just above it); its type and accepted
values come from the typed config (a family's `Config` dataclass, its `Choice` enums; the run's own
`DistConfig`). A key without a meaning, or a field of a typed config the YAML does not set, is a
build warning, and the docs build runs with -W: a key cannot be documented wrong or missing.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from importlib import resources
from pathlib import Path

import yaml
from sphinx.util import logging

logger = logging.getLogger(__name__)
PAGE = "configuration.md"


@dataclasses.dataclass
class Key:
    path: str
    default: str
    meaning: str
    kind: str = ""


def _comment(line: str) -> str:
    """The comment at the end of a YAML line ('' if none); values here hold no ' #'."""
    return line.split(" #", 1)[1].strip() if " #" in line else ""


def _block_above(lines: list[str], line: int, indent: int) -> str:
    """The comment lines that open the group of keys `line` belongs to: going up over the keys
    of the group (same indentation, no blank line between) to the first comment at that
    indentation. A section's comment at the end of its own line is not its keys' meaning."""
    i = line - 1
    while i >= 0 and lines[i].strip():
        text = lines[i]
        depth = len(text) - len(text.lstrip())
        if depth < indent:
            return ""
        if depth == indent and text.strip().startswith("#"):
            block = []
            while i >= 0 and lines[i].strip().startswith("#") and not lines[i].strip().startswith("# @package"):
                block.insert(0, lines[i].strip().lstrip("#").strip())
                i -= 1
            return " ".join(block)
        i -= 1
    return ""


def _keys(text: str, prefix: str = "") -> list[Key]:
    """Every leaf key of a YAML mapping text, with its default and meaning, in file order."""
    lines = text.splitlines()
    out: list[Key] = []

    def walk(node, path: str, inherited: str = "") -> None:
        for key_node, value in node.value:
            name = f"{path}.{key_node.value}" if path else key_node.value
            line = key_node.start_mark.line
            if inherited:  # an entry of a one-line mapping ({cpu: 64M, cuda: 2G}): the mapping's meaning
                meaning = inherited
            else:
                meaning = _comment(lines[line]) or _block_above(lines, line, key_node.start_mark.column)
            if isinstance(value, yaml.MappingNode) and value.value:
                out.append(Key(name, "", meaning, "section"))
                walk(value, name, meaning if value.flow_style else "")
            elif inherited:
                out.append(Key(name, yaml.serialize(value).strip().removesuffix("...").strip(), meaning))
            else:
                default = lines[line].split(":", 1)[1].split(" #", 1)[0].strip()
                out.append(Key(name, default, meaning))

    walk(yaml.compose(text), prefix)
    return out


def _type_name(tp) -> str:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of: " + ", ".join(str(m.value) for m in tp)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return "list of " + ", ".join(_type_name(a) for a in typing.get_args(tp) if a is not Ellipsis)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _types(config: type, prefix: str) -> dict[str, str]:
    """Each field's type, nested dataclasses flattened (dotted paths)."""
    out = {}
    hints = typing.get_type_hints(config)
    for f in dataclasses.fields(config):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(_types(tp, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = _type_name(tp)
    return out


def _table(keys: list[Key], types: dict[str, str], where: str, groups: dict[str, str]) -> list[str]:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    # a typed field whose YAML value is a mapping (mamf.presets) is one key: its entries are data
    typed_maps = {k.path for k in keys if k.kind == "section" and k.path in types}
    keys = [k for k in keys if not any(k.path.startswith(m + ".") for m in typed_maps)]
    for k in keys:
        if k.path in typed_maps:
            k.kind, k.default = "", "(a mapping: see the YAML)"
    leaves = {k.path for k in keys if k.kind != "section"}
    for field in types:
        if field not in leaves and field not in groups:
            logger.warning(f"{where}: {field} is a field of the typed config but the YAML sets no default")
    for k in keys:
        if k.kind == "section":
            rows.append(f"| **`{k.path}`** | | | {k.meaning} |")
            continue
        if not k.meaning:
            logger.warning(f"{where}: {k.path} has no comment beside it or above it saying what it means")
        kind = types.get(k.path) or "(from the default)"
        default = k.default.replace("|", "\\|") or "—"
        rows.append(f"| `{k.path}` | {kind} | `{default}` | {k.meaning.replace('|', '/')} |")
    return rows


def _groups(text: str, name: str) -> dict[str, str]:
    """A family's config groups (the YAML's defaults list: `- /whatif/model: deepseek_v3`) by key."""
    entries = yaml.safe_load(text).get("defaults") or []
    return {k.strip("/").replace("/", "."): v for e in entries if isinstance(e, dict) for k, v in e.items()
            if k.strip("/").startswith(f"{name}/")}


def render() -> str:
    from hpcbench.api import registry
    from hpcbench.core.config import DistConfig

    conf = resources.files("hpcbench.conf")
    out = ["# Configuration reference", "",
           "Every key hpcbench reads, generated from the shipped configs at each build of these pages: the "
           "default and meaning from the YAML files under `conf/` (the comment beside each key), the type and "
           "accepted values from the typed configs. Set any key on the command line (`hpcbench dist.nproc=4`, "
           "`hpcbench benchmark=gemm gemm.shapes=square`); `hpcbench --cfg job` prints the composed config.", "",
           "## The run (`conf/config.yaml`)", ""]
    main = (conf / "config.yaml").read_text()
    top = [k for k in _keys(main) if not k.path.startswith(("defaults", "hydra"))]
    out += _table(top, _types(DistConfig, "dist."), "conf/config.yaml", {}) + [""]
    for name, fam in sorted(registry.families().items()):
        text = (conf / "benchmark" / f"{name}.yaml").read_text()
        keys = [k for k in _keys(text) if k.path.startswith(f"{name}.")]
        groups = _groups(text, name)
        out += [f"## `benchmark={name}` (`conf/benchmark/{name}.yaml`)", "", fam.summary + ".", ""]
        out += _table(keys, _types(fam.config, f"{name}."), f"conf/benchmark/{name}.yaml", groups) + [""]
        for field, default in groups.items():
            choices = sorted(p.stem for p in (conf / field.replace(".", "/")).iterdir() if p.suffix == ".yaml")
            out += [f"`{field}` is a config group (default `{default}`; choose `{field}=NAME` or "
                    f"`{field.replace('.', '/')}=NAME`): {', '.join(choices)}; its keys are those of "
                    f"`conf/{field.replace('.', '/')}/{default}.yaml`.", ""]
    return "\n".join(out)


def _write(app) -> None:
    target = Path(app.srcdir) / PAGE
    text = render()
    if not target.is_file() or target.read_text() != text:
        target.write_text(text)


def setup(app):
    app.connect("builder-inited", _write)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
