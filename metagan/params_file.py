"""Reading a params file: YAML that refuses a key given twice, merged over the defaults key by key,
and pydantic's validation errors said one line per problem, an unknown key with the closest known
one. What the settings are is :mod:`metagan.config`'s."""

from __future__ import annotations

from pathlib import Path
from types import UnionType
from typing import Annotated, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from metagan.errors import ConfigError


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping: plain YAML keeps the last,
    so a second ``adapt:`` section would silently replace the first."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not _hashable(key):  # a complex key (``? [a, b]``): no setting is named by a list
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key must be a name, not a {type(key).__name__}",
                    key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice in one mapping (line {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _hashable(key) -> bool:
    try:
        hash(key)
    except TypeError:
        return False
    return True


def read_params_yaml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:  # bytes: YAML's reader checks the encoding and names the byte
            raw = yaml.load(f, Loader=_UniqueKeys) or {}  # noqa: S506 (a safe loader)
    except yaml.reader.ReaderError as e:
        raise ConfigError(f"{path}: {_unreadable_text(path, e)}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())[:300]}") from None
    except RecursionError:  # YAML's composer recurses once per level of brackets
        raise ConfigError(f"{path}: not valid params: lists or mappings nested too deeply") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def _unreadable_text(path: Path, e: yaml.reader.ReaderError) -> str:
    """What YAML's reader refused, with its line: a byte that is not UTF-8 (a comment saved as
    Latin-1, say) or a control character."""
    if e.encoding == "unicode":  # decoded, but a character YAML forbids; position counts characters
        text = path.read_bytes().decode("utf-8", "replace")
        return f"control character {e.character:#04x} on line {text[:e.position].count(chr(10)) + 1} is not allowed"
    line = path.read_bytes()[:e.position].count(b"\n") + 1  # position counts bytes
    return f"not UTF-8 text: byte {e.character:#04x} on line {line} (save the file as UTF-8)"


def merged(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``: mappings merge key by key, anything else (lists too) replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def format_validation_error(e: ValidationError, section: str = "", model: type[BaseModel] | None = None) -> str:
    """One line per problem; an unknown key of ``model`` (the model validated) names the closest
    known key of its mapping (``schedule: unknown key, did you mean `schedules`?``)."""
    lines = [f"invalid params: {e.error_count()} problem(s)"]
    for err in e.errors():
        where = ".".join([section] * bool(section) + [str(p) for p in err["loc"]])
        if err["type"] == "extra_forbidden":
            lines.append(f"  {where}: {unknown_key_said(str(err['loc'][-1]), _known_keys(model, err['loc'][:-1]))}")
        else:
            lines.append(f"  {where}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def unknown_key_said(key: str, known: list[str] | None) -> str:
    if not known:
        return "unknown key"
    import difflib  # only on this error path: the serving path imports this module

    close = difflib.get_close_matches(key, known, n=1)
    return f"unknown key, did you mean `{close[0]}`?" if close else f"unknown key (known here: {', '.join(known)})"


def _known_keys(model: type[BaseModel] | None, loc: tuple) -> list[str] | None:
    """The keys the mapping at ``loc`` inside ``model`` may hold; None where the model does not say."""
    for part in loc:
        field = model.model_fields.get(part) if model is not None and isinstance(part, str) else None
        model = _model_in(field.annotation) if field is not None else None
    return sorted(model.model_fields) if model is not None else None


def _model_in(annotation) -> type[BaseModel] | None:
    """The pydantic model a field holds (``Section``, ``Section | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, UnionType, Annotated):
        return next(filter(None, map(_model_in, get_args(annotation))), None)
    return None
