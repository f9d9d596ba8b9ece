"""The built documentation site: self-contained, formulas as MathML, no build scripts published.

The formula conversion itself (``docs/hooks_mathml.py``) is tested on its own first; the rest looks
at a strict build of the site (see ``tests/docs_site.py``).
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("latex2mathml")

from docs_site import ROOT, built_site


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mathml = _load("hooks_mathml")


def test_inline_and_display_formulas_become_mathml():
    page = (
        '<p>Weights <span class="arithmatex">\\(w_k = \\sum_{ij} g_{ij}\\)</span>.</p>\n'
        '<div class="arithmatex">\\[\\frac{a}{b} &lt; 1\\]</div>'
    )
    html = mathml.render_math(page)
    assert html.count("<math") == 2
    assert '<span class="arithmatex"><math' in html and 'display="inline"' in html
    assert '<div class="arithmatex"><math' in html and 'display="block"' in html
    assert "<mfrac>" in html and "&#x0003C;" in html  # the escaped "<" was read as "<"
    assert "\\(" not in html and "\\[" not in html and "\\frac" not in html


def test_text_and_double_struck_are_drawn_without_mathvariant():
    out = mathml.tex_to_mathml(r"\mathbb{1}[x \ge \text{min\_share}]")
    assert "\U0001d7d9" in out  # the double-struck one, as a character
    assert "mathvariant" not in out  # which MathML Core would ignore
    assert "<mtext>min_share</mtext>" in out  # the escaped underscore of text mode


@pytest.mark.parametrize("tex", [r"\frac{1}{", r"x^", r"\left( x", r"\notacommand x"])
def test_a_formula_that_does_not_convert_is_an_error(tex):
    with pytest.raises(mathml.MathError, match=re.escape(repr(tex))):
        mathml.tex_to_mathml(tex)


def test_text_without_formulas_is_unchanged():
    page = '<p>No maths: \\( alone, <span class="other">\\(x\\)</span></p>'
    assert mathml.render_math(page) == page


@pytest.fixture(scope="module")
def site() -> Path:
    return built_site()


def _pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


@pytest.mark.slow
def test_no_raw_tex_and_formulas_on_the_maths_pages(site):
    for page, least in [("methods/gradcampp", 20), ("methods/gradcam", 3), ("metrics", 10)]:
        html = (site / page / "index.html").read_text()
        assert html.count("<math") >= least, page
        body = re.sub(r"<math.*?</math>", "", html, flags=re.S)
        assert re.findall(r"\\\(|\\\[|\\frac|\\sum|\\mathrm", body) == [], page


@pytest.mark.slow
def test_the_site_loads_nothing_from_other_hosts(site):
    external = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*(?:src|href)=["']?(?:https?:)?//""")
    offenders = {
        str(page.relative_to(site)): external.findall(page.read_text()) for page in _pages(site)
    }
    assert {page: found for page, found in offenders.items() if found} == {}
    assert not list(site.rglob("*mathjax*"))


@pytest.mark.slow
def test_build_scripts_are_not_published(site):
    assert sorted(str(p.relative_to(site)) for p in site.rglob("*.py")) == []
    assert not (site / "generated").exists()
    assert (site / "figures").is_dir()  # the figures the scripts make are


@pytest.mark.slow
def test_api_examples_are_code_blocks_without_doctest_flags(site):
    pages = sorted(str(p.parent.relative_to(site)) for p in (site / "api").glob("*/index.html"))
    assert {"api/explainers", "api/targets", "api/resize", "api/demo"} <= set(pages)
    for page in pages:  # ">>>" read as markdown would be nested quotes
        html = (site / page / "index.html").read_text()
        assert "doctest" not in html, page
        assert "<blockquote" not in html, page
    for page in ["api/explainers", "api/targets", "api/resize", "api/demo"]:
        html = (site / page / "index.html").read_text()
        section = r"Examples:</span></p>\s*<div class=\"highlight\"><pre>(.*?)</pre>"
        examples = re.findall(section, html, re.S)
        assert examples, page  # an Examples section, rendered as a code block
        assert all('<span class="gp">&gt;&gt;&gt; </span>' in block for block in examples), page


@pytest.mark.slow
def test_the_tutorials_are_pages_with_their_outputs(site):
    for name, least in [("getting_started", 1), ("going_further", 3)]:
        html = (site / "tutorials" / name / "index.html").read_text()
        assert f"examples/{name}.ipynb" in html
        image = rf'<img alt="Output of the cell above" src="../({name}-\d+-\d+\.png)"'
        figures = re.findall(image, html)
        assert len(figures) >= least, name
        assert all((site / "tutorials" / figure).is_file() for figure in figures)
        assert html.count('class="nb-output') >= 3  # printed outputs
    started = (site / "tutorials" / "getting_started" / "index.html").read_text()
    assert "map maximum on the shape:" in started  # a line the tutorial prints


@pytest.mark.slow
def test_no_page_shows_a_warning_a_traceback_or_a_path_of_the_building_machine(site):
    """Every published page and the search index: no ``...Warning:`` line, no traceback, no folder
    of the machine that built the site (this checkout, Python's, the home or temporary folder)."""
    paths = {str(ROOT), sys.prefix, sys.base_prefix, str(Path.home()), tempfile.gettempdir()}
    paths = {p for p in paths if len(p) > 1} | {"site-packages"}
    warning = re.compile(r"\b[A-Z]\w*Warning: |Traceback \(most recent call last\)")
    files = [*_pages(site), site / "search" / "search_index.json"]
    found = {}
    for path in files:
        text = path.read_text(encoding="utf-8")
        hits = [m.group(0) for m in warning.finditer(text)]
        hits += [p for p in sorted(paths) if p in text]
        if hits:
            found[str(path.relative_to(site))] = hits
    assert found == {}


@pytest.mark.slow
def test_optional_arguments_show_their_defaults_on_the_api_page(site):
    html = (site / "api" / "resize" / "index.html").read_text()
    start = html.index('id="gradcampp.resize.cubic_taps"')
    table = html[start : html.index("</table>", html.index("Parameters", start))]
    rows = {
        re.sub(r"<[^>]+>", "", cells[0]).strip(): re.sub(r"<[^>]+>", "", cells[-1]).strip()
        for cells in (
            re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, flags=re.S)
        )
        if cells
    }
    assert rows == {
        "n_in": "required",
        "n_out": "required",
        "kernel_table": "False",
        "start": "0",
        "stop": "None",
    }
