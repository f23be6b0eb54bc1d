"""Open built pages in headless Chromium with no network but localhost, check them, screenshot them.

    python -m tools.browser                                   # every page of _build/html
    python -m tools.browser _build/html/book/00_warmup.html   # one page
    # -> problems on stdout (exit 1 when any), screenshots in _build/screenshots/<page>.png

Debian's Chromium, driven by Selenium through Debian's chromedriver (the same build as the
browser, so no driver download); the pages are served from a local HTTP server on a thread,
and Chromium resolves every host but 127.0.0.1 to nothing, so a page that needs a CDN fails.
What is checked: `tools.page_checks`. Not handled: other browsers, narrow (mobile) widths.
"""

from __future__ import annotations

import argparse
import base64
import functools
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from tools import page_checks
from tools.notebooks import ROOT, toc_files

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver"
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
WINDOW = (1280, 1000)  # a desktop window: the book's default page width
REDIRECT_WAIT_S = 30
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"


@dataclass(frozen=True)
class Page:
    path: str  # relative to the html folder, e.g. "book/00_warmup.html"
    notebook: str | None  # the repository path of its notebook, when it is one
    lands_on: str | None = None  # a redirecting page: where the reader ends up (checked there)


def missing() -> str | None:
    """Why the browser check cannot run here (with the command that fixes it), or None."""
    absent = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if absent:
        return f"{' and '.join(absent)} missing: install them with `{INSTALL}`"
    try:
        import selenium  # noqa: F401 - only whether it is installed
    except ImportError:
        return "selenium is missing: `make venv` installs requirements.txt"
    return None


def book_pages() -> list[Page]:
    """The redirecting index and every page of `_toc.yml`, in reading order."""
    pages = []
    for path in toc_files():
        relative = path.relative_to(ROOT)
        pages.append(Page(relative.with_suffix(".html").as_posix(),
                          relative.as_posix() if path.suffix == ".ipynb" else None))
    return [Page("index.html", None, lands_on=pages[0].path), *pages]  # Jupyter Book's index: the toc's root


@functools.cache
def book_config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def launch_for(page: Page) -> dict[str, str] | None:
    if page.notebook is None:
        return None
    config = book_config()
    return page_checks.launch_expectations(config.get("launch_buttons", {}), config["repository"], page.notebook)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Chromium asks for /favicon.ico by itself; the book has none, and that is no page's error.
        if code == 404 and self.path == "/favicon.ico":
            self.send_response(204)
            self.end_headers()
            return
        super().send_error(code, message, explain)


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve `folder` on 127.0.0.1 from a thread; yields the base URL (ending in '/')."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def chromium(window: tuple[int, int] = WINDOW) -> Iterator[object]:
    """A headless Chromium (a selenium WebDriver) that can reach only 127.0.0.1."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", OFFLINE,
                     f"--window-size={window[0]},{window[1]}", "--force-device-scale-factor=1",
                     "--disable-background-networking", "--disable-component-update", "--no-first-run",
                     "--disable-sync", "--disable-default-apps", "--lang=en-US"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.set_page_load_timeout(60)
        driver.set_script_timeout(60)
        yield driver
    finally:
        driver.quit()


def screenshot(driver: object, target: Path) -> None:
    """The whole page (not only the window) as a PNG, laid out at the window's width.

    The window is made as tall as the page for the shot (capturing beyond a normal window
    shifts the theme's sidebars), then given back its size.
    """
    width, height = driver.execute_script(
        "return [document.documentElement.clientWidth, document.documentElement.scrollHeight]")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    try:
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(base64.b64decode(shot["data"]))


def landed(driver: object, url: str) -> bool:
    """Whether the window shows `url`, loaded, within REDIRECT_WAIT_S: a redirect is done.

    Checking a page that is about to navigate away loses the check's script with its document
    (a script timeout that depended on how fast the machine was).
    """
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, REDIRECT_WAIT_S).until(
            lambda d: d.current_url == url and d.execute_script("return document.readyState") == "complete")
    except TimeoutException:
        return False
    return True


def check_page(driver: object, url: str, launch: dict[str, str] | None,
               shot: Path | None = None, lands_on: str | None = None) -> list[page_checks.Problem]:
    """Load `url`, screenshot it as a reader first sees it, then open every folded block and check.

    `lands_on`: the URL a redirecting `url` must lead to; the checks run on that page.
    """
    from selenium.common.exceptions import TimeoutException

    driver.get("about:blank")  # the last page's late messages land before the drain
    driver.get_log("browser")
    try:
        driver.get(url)
        if lands_on is not None and not landed(driver, lands_on):
            return [page_checks.Problem("redirect", f"{url} did not lead to {lands_on} within {REDIRECT_WAIT_S} s "
                                                    f"(the window shows {driver.current_url})")]
        notes = driver.execute_async_script(page_checks.WAIT_JS)
    except TimeoutException as error:
        return [page_checks.Problem("load", f"the page did not finish loading: {error.msg}")]
    if shot is not None:
        screenshot(driver, shot)
    driver.execute_script("document.querySelectorAll('details').forEach(d => { d.open = true; });")
    facts = driver.execute_script(page_checks.FACTS_JS)
    facts["notes"] = notes
    return page_checks.problems(facts, driver.get_log("browser"), launch)


def shot_name(path: str) -> str:
    return Path(path).with_suffix("").name + ".png"


def check_pages(html: Path, pages: list[Page], screenshots: Path | None = SCREENSHOTS,
                window: tuple[int, int] = WINDOW) -> dict[str, list[page_checks.Problem]]:
    """Every page's problems, by its path; a page missing from the build is one problem."""
    results: dict[str, list[page_checks.Problem]] = {}
    with serve(html) as base, chromium(window) as driver:
        for page in pages:
            if not (html / page.path).exists():
                results[page.path] = [page_checks.Problem("missing", f"{html / page.path} was not built")]
                continue
            shot = screenshots / shot_name(page.path) if screenshots is not None else None
            lands_on = base + page.lands_on if page.lands_on else None
            results[page.path] = check_page(driver, base + page.path, launch_for(page), shot, lands_on)
    return results


def html_root(page: Path) -> Path:
    """The built book's folder holding `page` (the nearest one with `_static/`), else its folder."""
    for folder in page.resolve().parents:
        if (folder / "_static").is_dir():
            return folder
    return page.resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="*", type=Path, help="built pages (default: every page of _build/html)")
    parser.add_argument("--html", type=Path, default=HTML, help="the built book (default: _build/html)")
    parser.add_argument("--screenshots", type=Path, default=SCREENSHOTS, help="where the PNGs go")
    args = parser.parse_args(argv)
    if missing():
        raise SystemExit(missing())
    if not args.pages:
        if not (args.html / "index.html").exists():
            raise SystemExit(f"{args.html} has no built book: run `make book` first")
        results = check_pages(args.html, book_pages(), args.screenshots)
    else:
        results = {}
        for path in args.pages:
            html = html_root(path)
            relative = path.resolve().relative_to(html).as_posix()
            source = ROOT / Path(relative).with_suffix(".ipynb")
            page = Page(relative, source.relative_to(ROOT).as_posix() if source.exists() else None)
            results.update(check_pages(html, [page], args.screenshots))
    print(page_checks.report(results))
    print(f"screenshots: {args.screenshots}")
    return 1 if any(results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
