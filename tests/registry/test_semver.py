import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.semver import Bump, SemVer


@pytest.mark.parametrize("text", ["0.0.1", "1.2.3", "10.20.30", "1.10.0"])
def test_valid_versions_parse_and_print_back(text):
    assert str(SemVer.parse(text)) == text


@pytest.mark.parametrize(
    "text", ["1.2", "1.2.3.4", "v1.2.3", "01.2.3", "1.02.3", "1.2.-3", "1.2.3-rc1", "", "a.b.c"]
)
def test_invalid_versions_are_refused_with_the_expected_form(text):
    with pytest.raises(ValueError, match=r"MAJOR\.MINOR\.PATCH"):
        SemVer.parse(text)


def test_ordering_is_numeric_not_lexical():
    assert SemVer.parse("1.10.0") > SemVer.parse("1.9.0")
    assert SemVer.parse("2.0.0") > SemVer.parse("1.99.99")
    assert SemVer.parse("1.0.10") > SemVer.parse("1.0.9")


@given(st.tuples(*[st.integers(0, 10**6)] * 3), st.tuples(*[st.integers(0, 10**6)] * 3))
def test_ordering_matches_integer_tuples(a, b):
    assert (SemVer(*a) < SemVer(*b)) == (a < b)
    assert SemVer.parse(str(SemVer(*a))) == SemVer(*a)


def test_bump_is_read_from_the_first_component_that_changed():
    v = SemVer.parse
    assert v("1.0.0").bump_from(None) is Bump.MAJOR
    assert v("2.0.0").bump_from(v("1.4.2")) is Bump.MAJOR
    assert v("1.5.0").bump_from(v("1.4.2")) is Bump.MINOR
    assert v("1.4.3").bump_from(v("1.4.2")) is Bump.PATCH
