"""Open local HTML files in headless Chromium (Debian's /usr/bin/chromium through Playwright).

Browsers cannot be downloaded here, so Playwright drives the system Chromium by its path. For each
page: the console messages of type error, uncaught page errors, network requests that are neither
``file:`` nor ``data:`` (a self-contained page makes none), the number of elements matching a
selector, and a full-page screenshot.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")


def missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright; no browser download needed)"
    return None


@dataclass
class PageCheck:
    """What one page did when it was opened."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    matches: int = 0
    screenshot: Path | None = None


def open_pages(pages: list[tuple[Path, Path]], selector: str, width: int = 1280) -> list[PageCheck]:
    """Open each HTML file, count ``selector`` matches and save a full-page PNG screenshot.

    One browser serves all pages (starting Chromium is the slow part).

    Args:
        pages: (HTML file, screenshot path) pairs.
        selector: A CSS selector whose matches are counted (e.g. the plots).
        width: Viewport width in CSS pixels.

    Returns:
        One PageCheck per page, in order.
    """
    from playwright.sync_api import sync_playwright

    checks = []
    with sync_playwright() as pw:
        # --no-sandbox: the tests run as root, where Chromium refuses its sandbox.
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            for html, png in pages:
                checks.append(_check(browser, Path(html), Path(png), selector, width))
        finally:
            browser.close()
    return checks


def _check(browser, html: Path, png: Path, selector: str, width: int) -> PageCheck:
    check = PageCheck(screenshot=png)
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.on("console", lambda m: check.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: check.page_errors.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else check.requests.append(r.url))
    page.goto(html.resolve().as_uri(), wait_until="load")
    check.matches = page.locator(selector).count()
    page.screenshot(path=str(png), full_page=True)
    page.close()
    return check
