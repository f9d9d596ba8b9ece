"""MkDocs hook: render the pages' TeX as MathML when the site is built.

``pymdownx.arithmatex`` (generic mode) leaves inline maths as ``<span class="arithmatex">\\(...\\)
</span>`` and display maths as ``<div class="arithmatex">\\[...\\]</div>``. This hook replaces the
TeX inside with MathML (``latex2mathml``), which browsers draw natively: the built site needs no
script and no network to show its formulas. A formula that cannot be converted stops the build
with the page and the TeX named.
"""

from __future__ import annotations

import html
import re
from typing import Any

from latex2mathml.converter import convert
from mkdocs.exceptions import PluginError

_MATH = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">\s*\\(?P<open>[(\[])(?P<tex>.*?)\\[)\]]\s*</(?P=tag)>',
    re.S,
)
_TEXT = re.compile(r"\\text\{([^{}]*)\}")
_LEFT_AS_TEX = re.compile(r"\\[A-Za-z]+")
_DOUBLE_STRUCK = re.compile(r'<(m[in]) mathvariant="double-struck">([^<]+)</\1>')
# Letters of the double-struck alphabet that Unicode places outside its block of them.
_DOUBLE_STRUCK_EXCEPTIONS = {
    "C": "\u2102",
    "H": "\u210d",
    "N": "\u2115",
    "P": "\u2119",
    "Q": "\u211a",
    "R": "\u211d",
    "Z": "\u2124",
}


class MathError(ValueError):
    """A TeX formula that could not be converted to MathML."""


def _double_struck(char: str) -> str:
    """``char`` as its Unicode double-struck letter or digit (MathML Core ignores mathvariant)."""
    if char in _DOUBLE_STRUCK_EXCEPTIONS:
        return _DOUBLE_STRUCK_EXCEPTIONS[char]
    if "0" <= char <= "9":
        return chr(0x1D7D8 + ord(char) - ord("0"))
    if "A" <= char <= "Z":
        return chr(0x1D538 + ord(char) - ord("A"))
    if "a" <= char <= "z":
        return chr(0x1D552 + ord(char) - ord("a"))
    return char


def tex_to_mathml(tex: str, display: bool = False) -> str:
    r"""One TeX formula (without its delimiters) as a MathML ``<math>`` element.

    Args:
        tex: the formula, e.g. ``\frac{1}{HW} \sum_{ij} g_{ij}``.
        display: a display (block) formula rather than an inline one.

    Returns:
        the ``<math>`` element as a string.

    Raises:
        MathError: when the formula cannot be converted.
    """
    # In text mode an escaped underscore is a plain underscore.
    source = _TEXT.sub(lambda m: "\\text{" + m.group(1).replace("\\_", "_") + "}", tex.strip())
    try:
        mathml = convert(source, display="block" if display else "inline")
    except Exception as error:  # the converter raises several types for bad input
        raise MathError(f"cannot convert the formula {tex!r} to MathML: {error!r}") from error
    unknown = _LEFT_AS_TEX.findall(mathml)
    if unknown:  # the converter passes commands it does not know through as text
        raise MathError(f"cannot convert the formula {tex!r} to MathML: unknown {unknown}")
    return _DOUBLE_STRUCK.sub(
        lambda m: f"<{m.group(1)}>{''.join(map(_double_struck, m.group(2)))}</{m.group(1)}>",
        mathml,
    )


def render_math(content: str) -> str:
    """Replace every arithmatex formula in a page's HTML ``content`` by MathML."""

    def replace(match: re.Match[str]) -> str:
        display = match.group("open") == "["
        mathml = tex_to_mathml(html.unescape(match.group("tex")), display=display)
        tag = match.group("tag")
        return f'<{tag} class="arithmatex">{mathml}</{tag}>'

    return _MATH.sub(replace, content)


def on_page_content(html_content: str, page: Any, **kwargs: Any) -> str:
    """Render the page's formulas as MathML."""
    try:
        return render_math(html_content)
    except MathError as error:
        raise PluginError(f"{page.file.src_uri}: {error}") from error
