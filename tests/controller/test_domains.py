"""The custom-domain policy as a pure function (the API tests attack it
through HTTP; these pin its corners)."""

from __future__ import annotations

import pytest

from roost.controller.domains import (
    DomainRefused,
    check_domain,
    default_host,
    normalize,
    routable_domains,
)


def test_normalize() -> None:
    assert normalize(" WWW.Example.COM. ") == "www.example.com"
    assert normalize("Bücher.Example") == "xn--bcher-kva.example"
    assert normalize("*.Example.org") == "*.example.org"
    for bad in ("", " ", ".", "a b.example", "\u00ad\u00ad.example"):
        with pytest.raises(DomainRefused):
            normalize(bad)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("shop.example.com", "shop.example.com"),
        ("www.x.localhost", "www.x.localhost"),
        ("*.x.localhost", "*.x.localhost"),
        ("xn--p1ai.xn--p1ai", "xn--p1ai.xn--p1ai"),
        ("localhost.example", "localhost.example"),  # not under the default domain
        ("xlocalhost.example", "xlocalhost.example"),
    ],
)
def test_accepted(raw: str, expected: str) -> None:
    assert check_domain(raw, "x", "localhost") == expected


@pytest.mark.parametrize(
    "raw",
    [
        "localhost", "x.localhost", "other.localhost", "a.b.localhost", "*.localhost",
        "1.2.3.4", "::1", "[2001:db8::1]", "*", "*.com.*", "a.*.example", "-a.example",
        "a" * 64 + ".example", "example", "x.123",
    ],
)  # fmt: skip
def test_refused(raw: str) -> None:
    with pytest.raises(DomainRefused):
        check_domain(raw, "x", "localhost")


def test_no_default_domain_only_checks_the_name() -> None:
    assert check_domain("other.localhost", "x", "") == "other.localhost"


def test_routable_domains_drops_what_the_policy_refuses() -> None:
    rows = ["other.localhost", "www.x.localhost", "localhost", "shop.example", "x.localhost"]
    assert routable_domains("x", rows, "localhost.") == ("www.x.localhost", "shop.example")
    assert default_host("x", "LocalHost.") == "x.localhost"
