"""`SolveConfig`'s fields as typed command-line options: one source for `ttsd solve` and `ttsd bench`.

Each field becomes `--field-name`, checked by the field's own pydantic type and bounds as it is
parsed, so a bad value exits 2 with a message naming the option (typer's "Invalid value for
'--top-p': ...") and both commands accept exactly the same spellings:

- int / float: a number; the bounds (ge, gt, le, lt) are shown as `[0<x<=1]` and enforced;
- Literal: one of the choices, shown as `<a|b|c>`;
- bool: `--name/--no-name`;
- list[str]: comma-separated (`--lora-target-modules q_proj,v_proj`), as in a config file's list;
- a nested model (`templates`): a JSON object, or the path of a file holding one.

Every option defaults to None, meaning "not given": the command fills it in (solve: the --config
file or the field's default; bench: what the bench recorded, else solve's default). The help shows
the field's description, its type, choices and bounds, and the default given by the command.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import annotated_types
import typer
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from rich.markup import escape

from ttsd.config import SolveConfig

PANEL = "Run settings (SolveConfig)"


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _unwrap_optional(annotation: Any) -> Any:
    """`X | None` -> X: an option not given is already "None", so the option parses X."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        others = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(others) == 1:
            return others[0]
    return annotation


def describe_bounds(metadata: Iterable[Any]) -> str | None:
    """The field's numeric bounds in click's notation: "x>=1", "x>0", "0<x<=1"; None when unbounded."""
    lower = upper = ""
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            lower = f"{item.ge}<="
        elif isinstance(item, annotated_types.Gt):
            lower = f"{item.gt}<"
        elif isinstance(item, annotated_types.Le):
            upper = f"<={item.le}"
        elif isinstance(item, annotated_types.Lt):
            upper = f"<{item.lt}"
    if not lower and not upper:
        return None
    if not upper:  # "x>=1" reads better than "1<=x"
        bound, _, inclusive = lower.partition("<")
        return f"x>{inclusive}{bound}"
    return f"{lower}x{upper}"


def split_list(text: str) -> list[str]:
    """A comma-separated list, blanks dropped: "q_proj, v_proj," -> ["q_proj", "v_proj"]."""
    return [part.strip() for part in text.split(",") if part.strip()]


def comma_list_parser(choices: Iterable[str] | None = None) -> Callable[[str], list[str]]:
    """A typer parser of comma-separated names, each one of `choices` when they are given."""
    allowed = list(choices) if choices is not None else None

    def parse(text: str) -> list[str]:
        names = split_list(text)
        if allowed is not None:
            if unknown := [name for name in names if name not in allowed]:
                raise typer.BadParameter(f"{', '.join(map(repr, unknown))}: choose from {', '.join(allowed)}")
        return names

    return parse


def _json_object(text: str) -> Any:
    """A JSON object given inline ("{...}") or as the path of a file holding one."""
    source = "the value"
    if not text.lstrip().startswith("{"):
        source = text
        try:
            text = Path(text).read_text(encoding="utf-8")
        except OSError as error:
            raise typer.BadParameter(f"neither a JSON object nor a readable file: {error.strerror or error}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise typer.BadParameter(f"{source} is not JSON: {error.msg} at line {error.lineno}, column {error.colno}") from None


def _validator(annotation: Any, metadata: list[Any], read: Callable[[str], Any]) -> Callable[[str], Any]:
    """The parser of one option: `read` the text, then validate it as the field would."""
    adapter = TypeAdapter(Annotated[annotation, *metadata]) if metadata else TypeAdapter(annotation)

    def parse(text: str) -> Any:
        try:
            value = adapter.validate_python(read(text))
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise typer.BadParameter(f"{where}: {first['msg']}" if where else first["msg"]) from None
        # Plain JSON-able data: bench records it in bench.json, solve merges it with a config file.
        return value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else value

    return parse


def _shown(value: Any) -> str:
    if isinstance(value, BaseModel):  # a whole model of defaults is too long for the help: name it
        return f"the defaults of {type(value).__module__}.{type(value).__name__}"
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def config_option(name: str, field: FieldInfo) -> inspect.Parameter:
    """The typer option of one SolveConfig field (default None: not given)."""
    annotation = _unwrap_optional(field.annotation)
    default = field.get_default(call_default_factory=True)
    shown_default = "derived" if default is None else _shown(default)
    # Typer shows a string default as "(…)", and these options' own default is None: the default is
    # written into the help instead, escaped since the help is rich markup.
    help_text = escape(f"{field.description}  [default: {shown_default}]")
    common = dict(help=help_text, show_default=False, rich_help_panel=PANEL)
    if annotation is bool:
        option = typer.Option(None, f"{option_name(name)}/--no-{name.replace('_', '-')}", **common)
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[bool])
    metadata = list(field.metadata)
    if typing.get_origin(annotation) is Literal:
        choices = typing.get_args(annotation)
        parser, metavar = _validator(annotation, metadata, str), "<" + "|".join(map(str, choices)) + ">"
    elif annotation in (int, float):
        bounds = describe_bounds(metadata)
        parser, metavar = _validator(annotation, metadata, str), f"<{annotation.__name__}>" + (f" [{bounds}]" if bounds else "")
    elif typing.get_origin(annotation) is list:
        item = typing.get_args(annotation)[0].__name__
        parser, metavar = _validator(annotation, metadata, split_list), f"<{item},{item},...>"
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        parser, metavar = _validator(annotation, metadata, _json_object), "<JSON object|FILE>"
    else:
        parser, metavar = _validator(annotation, metadata, str), f"<{getattr(annotation, '__name__', 'str')}>"
    option = typer.Option(None, option_name(name), parser=parser, metavar=metavar, **common)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[Any])


def with_config_options(
    command: Callable[..., Any], name: str, exclude: Iterable[str] = (), only: Iterable[str] | None = None
) -> Callable[..., Any]:
    """`command` (whose `**values` receive the config options) with one typed option per SolveConfig
    field (those in `only` when given) but `exclude` appended to its own options, for `app.command(name=...)`."""
    signature = inspect.signature(command, eval_str=True)  # the command module may defer annotations
    own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    own_names = {p.name for p in own}
    skipped, wanted = set(exclude), None if only is None else set(only)
    if wanted is not None and (unknown := wanted - set(SolveConfig.model_fields)):
        raise ValueError(f"not SolveConfig fields: {sorted(unknown)}")
    fields = [
        config_option(n, f) for n, f in SolveConfig.model_fields.items() if n not in skipped and (wanted is None or n in wanted)
    ]

    def wrapper(**kwargs: Any) -> Any:
        mine = {k: kwargs.pop(k) for k in list(kwargs) if k in own_names}
        return command(**mine, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=own + fields)
    wrapper.__doc__ = command.__doc__
    wrapper.__name__ = name
    return wrapper


def given(values: dict[str, Any]) -> dict[str, Any]:
    """The config options given on the command line (those not given are None)."""
    return {name: value for name, value in values.items() if value is not None}
