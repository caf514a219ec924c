"""Method variants (ttsd.variants): the --variants syntax, validated field by field."""

from __future__ import annotations

import pytest

from ttsd.variants import Variant, VariantError, parse_variant, parse_variants


def test_plain_methods_and_named_variants():
    plain, noquote, tuned = parse_variants(
        "sdpo, sdpo-noquote=sdpo:--no-feedback-source-line,tr.1=sdpo:--teacher=trust-region:--top-p=0.9:--lora-target-modules=q_proj+v_proj"
    )
    assert plain == Variant(name="sdpo", method="sdpo") and plain.plain
    assert noquote == Variant(name="sdpo-noquote", method="sdpo", overrides={"feedback_source_line": False}) and not noquote.plain
    assert tuned.overrides == {"teacher": "trust-region", "top_p": 0.9, "lora_target_modules": ["q_proj", "v_proj"]}
    assert parse_variant("bok=best-of-k:--feedback-input").overrides == {"feedback_input": True}
    assert parse_variant("x=sdpo:--feedback-unrun=skip").overrides == {"feedback_unrun": "skip"}
    assert parse_variant("same=sdpo") == Variant(name="same", method="sdpo")


def test_run_options_label_named_variants_only():
    shared = {"budget": 8, "feedback_source_line": True}
    assert parse_variant("sdpo").run_options(shared) == {"budget": 8, "feedback_source_line": True, "method": "sdpo"}
    assert parse_variant("nq=sdpo:--no-feedback-source-line").run_options(shared) == {
        "budget": 8, "feedback_source_line": False, "method": "sdpo", "variant": "nq",
    }


@pytest.mark.parametrize("text, message", [
    ("telepathy", "not a method"),
    ("x=sdpo:--no-such-field=1", "not a run setting"),
    ("x=sdpo:--top-p=2", "--top-p=2"),
    ("x=sdpo:--budget=many", "--budget=many"),
    ("x=sdpo:--teacher=oracle", "--teacher=oracle"),
    ("x=sdpo:--seed=3", "sets it per run"),
    ("x=sdpo:--method=best-of-k", "sets it per run"),
    ("x=sdpo:--budget", "needs a value"),
    ("x=sdpo:budget=3", "--field-name=VALUE"),
    ("a/b=sdpo", "names directories"),
    ("sdpo=sdpo:--no-feedback-input", "a method's name"),
    ("best-of-k=sdpo", "a method's name"),
])
def test_bad_variants_are_refused_naming_the_entry(text, message):
    with pytest.raises(VariantError) as error:
        parse_variant(text)
    assert message in str(error.value) and repr(text) in str(error.value)


def test_names_must_differ():
    with pytest.raises(VariantError, match="more than once"):
        parse_variants("a=sdpo,a=sdpo:--no-feedback-input")
    with pytest.raises(VariantError, match="no variants"):
        parse_variants(" , ")
