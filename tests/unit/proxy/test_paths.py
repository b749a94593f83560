"""Path normalisation: what routing and forwarding both see."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy import paths
from proxy.paths import BadPath, ancestors, normalise_path


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (b"/products", "/products"),
        (b"/products/", "/products/"),
        (b"/products/../orders", "/orders"),
        (b"/products/%2e%2e/orders", "/orders"),
        (b"/products/%2E%2E/orders", "/orders"),
        (b"/products/./1", "/products/1"),
        (b"//products///1", "/products/1"),
        (b"/../../etc/passwd", "/etc/passwd"),
        (b"/a%20b", "/a%20b"),
        (b"/%70roducts", "/products"),
        (b"/", "/"),
    ],
)
def test_known_paths_normalise(raw: bytes, normal: str) -> None:
    assert normalise_path(raw) == normal


@pytest.mark.parametrize(
    "raw",
    [
        b"http://evil.example/x",
        b"*",
        b"/a%2fb",
        b"/a%2Fb",
        b"/a%5cb",
        b"/a\\b",
        b"/a%00",
        b"/\xff",
        b"/products/%ff",
    ],
)
def test_unsafe_targets_are_refused(raw: bytes) -> None:
    with pytest.raises(BadPath):
        normalise_path(raw)


segments = st.lists(
    st.sampled_from(["products", "orders", "..", ".", "", "%2e%2e", "%2E", "1", "a b", "%41"]),
    max_size=8,
)


@given(segments)
def test_normal_form_has_no_dot_segments_and_is_stable(parts: list[str]) -> None:
    raw = ("/" + "/".join(parts)).replace(" ", "%20").encode()
    normal = normalise_path(raw)
    assert normal.startswith("/")
    assert "//" not in normal
    assert all(seg not in ("..", ".") for seg in normal.split("/"))
    assert normalise_path(normal.encode()) == normal


def test_ancestors_run_from_longest_to_root() -> None:
    assert ancestors("/a/b/c") == ["/a/b/c", "/a/b", "/a", "/"]
    assert ancestors("/a/") == ["/a", "/"]
    assert ancestors("/") == ["/"]


@given(
    parts=st.lists(
        st.sampled_from(
            ["", ".", "..", "a", "B9", ".x", "..y", "a.b", "~u", "-_", "%2e", "%41", "@:"]
        ),
        max_size=6,
    ),
    trailing=st.booleans(),
)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_plain_path_shortcut_agrees_with_the_full_normalisation(
    parts: list[str], trailing: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain paths skip the per-segment work; whatever takes the shortcut must come out
    exactly as the full normalisation would have it."""
    raw = ("/" + "/".join(parts) + ("/" if trailing else "")).encode()
    fast = normalise_path(raw)
    with monkeypatch.context() as patched:
        patched.setattr(paths, "_PLAIN", re.compile(rb"(?!)"))  # never matches: full path
        assert normalise_path(raw) == fast
