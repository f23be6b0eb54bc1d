"""The book in a real browser: headless Chromium, no network but localhost (tools/browser.py).

The fixture tests (small pages served from a temporary folder) run with `make test` and show
that every check can fail; `make browser` (after `make book`) opens every built page:

    .venv/bin/python -m pytest -m browser tests/test_browser.py

Chromium missing: skipped with the install command, but FAILS when $CI is set (CI must run it).
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from tools import browser, page_checks, vendor

CONFIG = browser.book_config()


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser test: {reason}", pytrace=False)
    pytest.skip(reason)


def png(width: int = 8, height: int = 4) -> bytes:
    """A real red PNG (so `naturalWidth` is its width)."""
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


COLAB = page_checks.launch_expectations(CONFIG["launch_buttons"], CONFIG["repository"], "book/00_x.ipynb")["Colab"]
# MathJax itself comes with the built book; here a stand-in that "has typeset" the page's math.
GOOD = f"""
<script>window.MathJax = {{startup: {{promise: Promise.resolve(), document: {{math: []}}}}}};</script>
<p>Typeset math: <span class="math"><mjx-container>x</mjx-container></span>; prices $5 and $10.</p>
<img src="red.png" alt="A red rectangle, twice as wide as it is tall">
<pre>x = 1  # short</pre>
<a href="{COLAB}" title="Launch on Colab"><span>Colab</span></a>
"""
BROKEN = {
    "missing_image": '<img src="nowhere.png" alt="A plot that was never written">',
    "file_name_alt": '<img src="red.png" alt="../_images/red.png">',
    "no_alt": '<img src="red.png">',
    "overflow": "<pre>def attend(query, key, value):  # " + "a very long comment " * 30 + "</pre>",
    "folded_overflow": "<details><summary>show</summary><pre>folded = " + "1 + " * 200 + "1</pre></details>",
    "page_scrolls": '<p style="width: 3000px">a paragraph wider than any window</p>',
    "raw_tex": r"<p>the loss $\frac{1}{n} \sum_i \ell_i$ per token</p>",
    "untypeset_math": r'<span class="math notranslate">\(x^2\)</span>',
    "console_error": "<script>console.error('something broke')</script>",
    "cdn": '<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>',
    "machine_path": "<pre>seed 0; data files from /home/someone/llama/data</pre>",
    "wrong_launch": f'<a href="{COLAB.replace("00_x", "01_y")}" title="Launch on Colab">Colab</a>',
}


def page(body: str) -> str:
    style = "<style>pre { overflow-x: auto; }</style>"  # as the book's theme: a wide pre scrolls
    return f"<!doctype html><html><head><title>fixture</title>{style}</head><body><article>{body}</article></body></html>"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site")
    (folder / "red.png").write_bytes(png())
    (folder / "good.html").write_text(page(GOOD))
    for name, body in BROKEN.items():
        (folder / f"{name}.html").write_text(page(GOOD + body))
    with browser.serve(folder) as base:
        yield folder, base


@pytest.fixture(scope="module")
def driver():
    reason = browser.missing()
    if reason:
        unavailable(reason)
    with browser.chromium() as chromium:
        yield chromium


def check(driver, site, name: str, tmp_path: Path | None = None) -> list[page_checks.Problem]:
    folder, base = site
    shot = tmp_path / f"{name}.png" if tmp_path else None
    return browser.check_page(driver, f"{base}{name}.html", {"Colab": COLAB}, shot)


def test_a_good_page_passes_and_its_screenshot_is_the_whole_page(driver, site, tmp_path):
    assert check(driver, site, "good", tmp_path) == []
    data = (tmp_path / "good.png").read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    assert data.startswith(b"\x89PNG") and 1200 < width <= browser.WINDOW[0] and height > 100


@pytest.mark.parametrize("name, kind, words", [
    ("missing_image", "image", "nowhere.png) did not load"),
    ("file_name_alt", "alt", "is a file name"),
    ("no_alt", "alt", "has no alt text"),
    ("overflow", "overflow", "def attend(query"),
    ("folded_overflow", "overflow", "folded = 1 + 1"),
    ("page_scrolls", "overflow", "the page itself scrolls sideways"),
    ("raw_tex", "math", r"\frac{1}{n}"),
    ("untypeset_math", "math", "x^2"),
    ("console_error", "console", "something broke"),
    ("cdn", "console", "ERR_NAME_NOT_RESOLVED"),  # the network is really off
    ("machine_path", "path", "/home/someone/llama"),
    ("wrong_launch", "launch", "01_y.ipynb"),
])
def test_each_check_fails_on_a_broken_page_and_names_the_element(driver, site, name, kind, words):
    found = check(driver, site, name)
    assert [p for p in found if p.kind == kind and words in p.message], f"{name}: {found}"
    assert {p.kind for p in found} <= {kind, "console", "image"}, f"{name}: unrelated problems {found}"


def test_a_missing_launch_button_and_a_missing_page_are_problems(driver, site, tmp_path):
    folder, _ = site
    (folder / "no_launch.html").write_text(page("<p>no buttons</p>"))
    assert [p.kind for p in check(driver, site, "no_launch")] == ["launch"]
    results = browser.check_pages(folder, [browser.Page("gone.html", None)], screenshots=None)
    assert [p.kind for p in results["gone.html"]] == ["missing"]


def test_one_page_from_the_command_line_prints_its_problems_and_a_screenshot(driver, site, tmp_path, capsys):
    folder, _ = site  # no notebook beside these pages, so no launch buttons are expected
    (folder / "wide.html").write_text(page(BROKEN["overflow"]))
    (folder / "plain.html").write_text(page("<p>Nothing wrong here.</p>"))
    assert browser.main([str(folder / "wide.html"), "--screenshots", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "wide.html: 1 (overflow 1)" in out and "def attend(query" in out
    assert (tmp_path / "wide.png").stat().st_size > 1000
    assert browser.main([str(folder / "plain.html"), "--screenshots", str(tmp_path)]) == 0


def test_without_chromium_it_says_how_to_install_it_and_ci_fails(monkeypatch):
    monkeypatch.setattr(browser, "CHROMIUM", "/nowhere/chromium")
    reason = browser.missing()
    assert "/nowhere/chromium missing" in reason and "`apt-get install -y chromium chromium-driver`" in reason
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install"):
        unavailable(reason)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the browser test"):
        unavailable(reason)


def test_the_report_groups_every_problem_of_every_page():
    results = {"a.html": [page_checks.Problem("alt", "image 0 has no alt text"),
                          page_checks.Problem("overflow", "cell 3 source: pre is 40 px wider")],
               "b.html": [], "c.html": [page_checks.Problem("alt", "image 2 has no alt text")]}
    text = page_checks.report(results)
    assert text.splitlines()[0] == "3 problems on 2 of 3 pages (alt: 2, overflow: 1)"
    assert "a.html: 2 (alt 1, overflow 1)" in text and "c.html: 1 (alt 1)" in text and "b.html" not in text


def test_alt_text_must_describe_the_image():
    assert page_checks.alt_problem("Loss against tokens seen, falling from 10 to 2 nats") is None
    for bad in (None, "", "  ", "../_images/abc123.png", "figure.svg", "Figure", "plot"):
        assert page_checks.alt_problem(bad), bad


def test_the_colab_link_is_the_notebook_on_github():
    url = page_checks.launch_expectations(CONFIG["launch_buttons"], CONFIG["repository"], "book/00_warmup.ipynb")
    org_repo = CONFIG["repository"]["url"].removeprefix("https://github.com/")
    assert url == {"Colab": f"{CONFIG['launch_buttons']['colab_url']}/github/{org_repo}/blob/main/book/00_warmup.ipynb"}
    with pytest.raises(ValueError, match="jupyterhub_url"):
        page_checks.launch_expectations({"jupyterhub_url": "https://hub"}, CONFIG["repository"], "x.ipynb")


def test_every_toc_page_is_checked_with_its_notebook():
    pages = browser.book_pages()
    assert pages[0] == browser.Page("index.html", None, lands_on=pages[1].path)
    assert pages[1] == browser.Page("book/intro.html", None)  # where Jupyter Book's index leads
    assert browser.Page("book/00_warmup.html", "book/00_warmup.ipynb") in pages
    assert browser.Page("book/intro.html", None) in pages
    assert len({browser.shot_name(p.path) for p in pages}) == len(pages), "two pages would share a screenshot"


def test_a_slow_redirect_is_followed_before_the_checks_run(driver, site):
    # A check started on a page that is leaving checks the wrong page, or loses its script with
    # the document (the "script timeout" a busy CI machine hit on index.html's meta refresh).
    # The leaving page has a flaw the landing page lacks, so checking the wrong one shows.
    folder, base = site
    leaving = "<script>setTimeout(() => { location.href = 'good.html'; }, 1000)</script><img src='red.png'>"
    (folder / "slow_index.html").write_text(page(leaving))
    assert [p.kind for p in browser.check_page(driver, f"{base}slow_index.html", None)] == ["alt"]
    assert browser.check_page(driver, f"{base}slow_index.html", {"Colab": COLAB}, lands_on=f"{base}good.html") == []
    assert driver.current_url == f"{base}good.html"


def test_a_redirect_that_goes_nowhere_is_a_problem(driver, site, monkeypatch):
    folder, base = site
    monkeypatch.setattr(browser, "REDIRECT_WAIT_S", 2)
    (folder / "stuck_index.html").write_text(page("<p>no redirect here</p>"))
    found = browser.check_page(driver, f"{base}stuck_index.html", None, lands_on=f"{base}good.html")
    assert [p.kind for p in found] == ["redirect"] and "did not lead to" in found[0].message, found
    assert found[0].message.endswith(f"(the window shows {base}stuck_index.html)")


@pytest.fixture(scope="module")
def vendored(tmp_path_factory):
    """A site with the book's pinned MathJax (from the npm cache of `make book`, else from npm)."""
    if shutil.which("npm") is None and not all(p.tarball.exists() for p in vendor.PACKAGES):
        unavailable(vendor.NPM_MISSING)
    folder = tmp_path_factory.mktemp("vendored")
    vendor.install(folder / "_static")
    mathjax = '<script defer src="_static/mathjax/tex-mml-chtml.js"></script>'
    (folder / "math.html").write_text(page(mathjax + r"""
        <p>Scores scaled by <span class="math">\(\frac{1}{\sqrt{d}}\)</span>, then</p>
        <div class="math">\[\operatorname{softmax}(x)_i = \frac{e^{x_i}}{\sum_j e^{x_j}}\]</div>"""))
    (folder / "bad_math.html").write_text(page(mathjax + r"""
        <p><span class="math">\(\frac{1}{\sqrtt{d}}\)</span> and <span class="math">\(x^{2\)</span></p>"""))
    with browser.serve(folder) as base:
        yield base


def test_the_pinned_mathjax_typesets_offline_and_its_fonts_load(driver, vendored):
    assert browser.check_page(driver, vendored + "math.html", None) == []
    families = driver.execute_script(
        "return [...document.fonts].filter(f => f.status === 'loaded').map(f => f.family)")
    assert "MJXTEX" in families and driver.execute_script("return document.querySelectorAll('mjx-container').length") == 2


def test_tex_errors_are_reported_with_their_source(driver, vendored):
    found = browser.check_page(driver, vendored + "bad_math.html", None)
    messages = sorted(p.message for p in found if p.kind == "math")
    assert len(messages) == 2 and {p.kind for p in found} == {"math"}, found
    assert messages[0].startswith("MathJax error in \\frac{1}{\\sqrtt{d}}") and "sqrtt" in messages[0]
    assert messages[1] == "raw TeX, not typeset by MathJax: text: \\(x^{2\\)"  # MathJax never saw it


@pytest.mark.browser
def test_every_built_page_renders_offline_and_fits_the_page():
    reason = browser.missing()
    if reason:
        unavailable(reason)
    if not (browser.HTML / "index.html").exists():
        unavailable(f"no built book in {browser.HTML}: run `make book` first")
    results = browser.check_pages(browser.HTML, browser.book_pages())
    assert not any(results.values()), page_checks.report(results) + f"\nscreenshots: {browser.SCREENSHOTS}"
