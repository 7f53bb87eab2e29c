"""analysis.markdown_html: the report's markdown as one self-contained HTML page."""

from __future__ import annotations

import base64

from analysis.markdown_html import markdown_to_html


def test_markdown_to_html_is_one_self_contained_page_that_shows_html_as_text(tmp_path):
    png = b"\x89PNG\r\n\x1a\n tiny"
    (tmp_path / "fig.png").write_bytes(png)
    md = ("# T\n\nA *b* **c** `d` <script>alert(1)</script> tpr_at_1pct_fpr\nmore\n\n"
          "| a | b |\n|---|---|\n| 1 | **2** |\n\n- one\n- two\n\n"
          "![a figure](fig.png)\n\n![gone](missing.png)\n")
    html = markdown_to_html(md, tmp_path, title="r <1>")
    assert "<title>r &lt;1&gt;</title>" in html and "<h1>T</h1>" in html
    assert ("<p>A <em>b</em> <strong>c</strong> <code>d</code> "
            "&lt;script&gt;alert(1)&lt;/script&gt; tpr_at_1pct_fpr\nmore</p>") in html
    assert "<script>" not in html
    assert "<th>a</th>" in html and "<td><strong>2</strong></td>" in html
    assert "<li>one</li>" in html and "<li>two</li>" in html
    # The PNG travels inside the page; a missing image keeps its path.
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in html
    assert 'src="missing.png"' in html
