"""Code and diffs as highlighted HTML (pygments, CSS classes: no inline styles)."""
from __future__ import annotations

from functools import lru_cache

from markupsafe import Markup


def highlight(text: str | None, language: str) -> Markup:
    from pygments import highlight as render
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import DiffLexer, PythonLexer

    if not text:
        return Markup("")
    lexer = DiffLexer() if language == "diff" else PythonLexer()
    return Markup(render(text, lexer, HtmlFormatter(cssclass="code", linenos=language != "diff")))


@lru_cache(maxsize=1)
def code_css() -> str:
    from pygments.formatters import HtmlFormatter

    return HtmlFormatter(cssclass="code", style="friendly").get_style_defs(".code")
