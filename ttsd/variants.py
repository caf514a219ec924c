"""Method variants: a method plus SolveConfig overrides, named, so that one bench runs ablations side by side.

    ttsd bench --variants 'sdpo,sdpo-noquote=sdpo:--no-feedback-source-line,sdpo-tr=sdpo:--teacher=trust-region'

The syntax of one variant (variants are comma-separated):

    METHOD                                   the method as it is (its name is the method's)
    NAME=METHOD[:OVERRIDE]...                a named variant; each OVERRIDE one SolveConfig field:
        --field-name=VALUE                   any field (VALUE as on the command line; a list's items
                                             joined by '+', since ',' separates variants; a nested
                                             model as inline JSON without commas, or a file path)
        --field-name / --no-field-name       a boolean field on / off

NAME: letters, digits, '.', '_', '-' (it names the run directories, BENCH_DIR/runs/<problem>/<NAME>/);
a method's name may only name that method without overrides. `method`, `seed` and `variant` cannot
be overridden (the bench sets them per run). Values are checked against the field's type and bounds
by pydantic when the variant is parsed (`parse_variant`), and again with the shared options when
the bench validates each run's config. A run of a named variant records its name in its config
(`SolveConfig.variant`) and summary, so `ttsd compare` shows each variant as its own row and curve.
"""

from __future__ import annotations

import json
import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

# ttsd.config is imported inside the parsers: ttsd.bench imports this module and stays light.

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
FIXED_FIELDS = ("method", "seed", "variant")  # set by the bench per run


class VariantError(ValueError):
    """A --variants entry that cannot be parsed or validated; the message names the entry."""


class Variant(BaseModel, frozen=True):
    name: str = Field(pattern=NAME_PATTERN, description="the row in `ttsd compare` and the run directories' name")
    method: str = Field(description="one of ttsd.config.METHODS")
    overrides: dict[str, Any] = Field(default_factory=dict, description="SolveConfig fields set for this variant's runs")

    @property
    def plain(self) -> bool:
        """A method as it is: its runs are the method's own (no `variant` label in their config)."""
        return self.name == self.method and not self.overrides

    def run_options(self, shared: dict[str, Any]) -> dict[str, Any]:
        """The SolveConfig fields of this variant's runs (but seed): shared options, overrides, method, label."""
        options = {**shared, **self.overrides, "method": self.method}
        if not self.plain:
            options["variant"] = self.name
        return options


def _field_value(field: str, text: str) -> Any:
    from ttsd.config import SolveConfig

    info = SolveConfig.model_fields[field]
    annotation = info.annotation
    inner = annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # X | None: parse X
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner = args[0] if len(args) == 1 else annotation
    value: Any = text
    if typing.get_origin(inner) is list:
        value = [part.strip() for part in text.split("+") if part.strip()]
    elif isinstance(inner, type) and issubclass(inner, BaseModel):
        try:
            value = json.loads(text if text.lstrip().startswith("{") else Path(text).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise VariantError(f"--{field.replace('_', '-')}: neither a JSON object nor a readable JSON file ({error})") from None
    try:
        checked = TypeAdapter(typing.Annotated[annotation, *info.metadata] if info.metadata else annotation).validate_python(value)
    except ValidationError as error:
        raise VariantError(f"--{field.replace('_', '-')}={text}: {error.errors()[0]['msg']}") from None
    return checked.model_dump(exclude_unset=True) if isinstance(checked, BaseModel) else checked


def _override(text: str) -> tuple[str, Any]:
    from ttsd.config import SolveConfig

    if not text.startswith("--"):
        raise VariantError(f"{text!r}: an override is --field-name=VALUE, --flag or --no-flag")
    option, has_value, value = text[2:].partition("=")
    field = option.replace("-", "_")
    negated = not has_value and field.startswith("no_") and field[3:] in SolveConfig.model_fields
    if negated:
        field = field[3:]
    if field not in SolveConfig.model_fields:
        raise VariantError(f"--{option}: not a run setting (see `ttsd solve --help`)")
    if field in FIXED_FIELDS:
        raise VariantError(f"--{option}: the bench sets it per run; it cannot differ between variants")
    if not has_value:
        if SolveConfig.model_fields[field].annotation is not bool:
            raise VariantError(f"--{option}: needs a value (--{option}=VALUE)")
        return field, not negated
    return field, _field_value(field, value)


def parse_variant(text: str) -> Variant:
    """One variant from its text (this module's docstring); raises VariantError naming what is wrong."""
    from ttsd.config import METHODS

    text = text.strip()
    name, has_name, rest = text.partition("=")
    if not has_name:
        name, rest = text, text
    method, *overrides = rest.split(":")
    name, method = name.strip(), method.strip()
    where = f"variant {text!r}"
    if method not in METHODS:
        raise VariantError(f"{where}: {method!r} is not a method; choose from {', '.join(METHODS)}")
    if not re.match(NAME_PATTERN, name):
        raise VariantError(f"{where}: the name {name!r} must be letters, digits, '.', '_' or '-' (it names directories)")
    try:
        fields = dict(_override(part.strip()) for part in overrides if part.strip())
    except VariantError as error:
        raise VariantError(f"{where}: {error}") from None
    variant = Variant(name=name, method=method, overrides=fields)
    if name in METHODS and not variant.plain:  # "sdpo" must always mean sdpo as it is
        raise VariantError(f"{where}: {name!r} is a method's name; give the variant a name of its own (NAME={method}:...)")
    return variant


def parse_variants(text: str) -> list[Variant]:
    """Comma-separated variants, in order; each name once."""
    variants = [parse_variant(part) for part in text.split(",") if part.strip()]
    if not variants:
        raise VariantError("no variants given")
    names = [v.name for v in variants]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise VariantError(f"variant names must differ: {', '.join(duplicates)} given more than once")
    return variants
