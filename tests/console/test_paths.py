"""console.paths gives the same paths as reverse(), which the long tables used per row."""

from __future__ import annotations

import pytest
from django.urls import NoReverseMatch, reverse, set_script_prefix

from console.paths import PathTemplate, path_template

ODD = ["hotspot-classifier", "m.1_x-2", "1.0.0", "2.0.0-rc.1+build.7", "a b", "ü&'=;", "100%"]


@pytest.mark.parametrize("name", ODD)
@pytest.mark.parametrize("version", ODD)
def test_the_paths_are_reverses_own(name, version):
    assert path_template("console:model", 1)(name) == reverse("console:model", args=[name])
    assert path_template("registry:version-detail", 2)(name, version) == reverse(
        "registry:version-detail", args=[name, version]
    )


def test_integer_arguments_and_several_in_one_path():
    act = path_template("console:alert-act", 2)
    for pk in (1, 42, 9182736, 10**12):
        assert act(pk, "resolve") == reverse("console:alert-act", args=[pk, "resolve"])
    assert path_template("console:incident", 1)(7) == reverse("console:incident", args=[7])


def test_what_reverse_refuses_is_refused():
    with pytest.raises(NoReverseMatch):
        reverse("console:model", args=["a/b"])
    with pytest.raises(NoReverseMatch):
        path_template("console:model", 1)("a/b")
    with pytest.raises(NoReverseMatch):
        path_template("console:model", 1)("")
    with pytest.raises(NoReverseMatch):  # a URL name without arguments has nothing to fill in
        PathTemplate("console:overview", 1)


def test_the_script_prefix_of_the_request_is_used():
    set_script_prefix("/governance/")
    try:
        assert path_template("console:model", 1)("m") == reverse("console:model", args=["m"])
        assert path_template("console:model", 1)("m").startswith("/governance/console/")
    finally:
        set_script_prefix("/")
    assert path_template("console:model", 1)("m") == "/console/models/m/"
