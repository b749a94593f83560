"""A very small HTML builder that escapes by construction.

The dashboard renders text that came from elsewhere (shadow diffs of response bodies, audit
reasons, upstream names) into HTML. jinja2 is not a dependency of the project, and one extra
dependency for a page this size is not worth it; instead every string is escaped unless it is
an `Html` value, and `Html` values come only from `tag()` (or `Html.join`), so a missed escape
cannot happen by forgetting to write one.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

__all__ = ["Child", "Html", "tag"]


class Html(str):
    """Markup that is safe to send as it is."""

    __slots__ = ()

    @classmethod
    def join_all(cls, parts: Iterable[Child]) -> Html:
        return cls("".join(_render(part) for part in parts))


Child = Html | str | int | float | None | Iterable["Child"]
"""What may go inside a tag: markup, text (escaped), numbers, nothing, or a sequence of these."""

_VOID = frozenset({"br", "hr", "img", "input", "meta", "link", "col"})


def _render(child: Child) -> str:
    if child is None:
        return ""
    if isinstance(child, Html):
        return child
    if isinstance(child, str):
        return escape(child, quote=False)
    if isinstance(child, int | float):
        return escape(str(child), quote=False)
    return "".join(_render(part) for part in child)


def _attribute(name: str, value: str | int | float | bool | None) -> str:
    name = name.rstrip("_").replace("_", "-")
    if value is None or value is False:
        return ""
    if value is True:
        return f" {name}"
    return f' {name}="{escape(str(value), quote=True)}"'


def tag(name: str, *children: Child, **attributes: str | int | float | bool | None) -> Html:
    """`<name attributes>children</name>`; `class_="x"` is `class="x"`, `data_x` is
    `data-x`; an attribute that is None or False is left out, one that is True is bare."""
    opened = f"<{name}{''.join(_attribute(k, v) for k, v in attributes.items())}>"
    if name in _VOID:
        return Html(opened)
    return Html(f"{opened}{_render(children)}</{name}>")
