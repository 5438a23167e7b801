"""Page layouts of the synthetic invoice generator: printed strings in, a clean A4 Pillow image out.

A layout receives a :class:`PrintedInvoice` (every string already formatted as it must appear on the
page) and draws it; it decides positions, fonts and rules, never content. Coordinates are written in
units of a 100 dpi page (827 x 1169) and scaled to the requested dpi, so a document looks the same at
every resolution. Every string drawn is recorded in ``Page.drawn``, which lets tests check that the
ground-truth values are really on the page.

This module must never use random numbers, read the clock or touch the filesystem beyond loading
fonts: the same ``PrintedInvoice`` and dpi always give the same pixels. It never imports Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from PIL import Image, ImageDraw, ImageFont

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FAMILIES: dict[str, tuple[str, str]] = {
    "sans": ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf"),
    "serif": ("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf"),
    "condensed": ("DejaVuSansCondensed.ttf", "DejaVuSansCondensed-Bold.ttf"),
    "mono": ("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf"),
}
A4_MM = (210.0, 297.0)
BLACK = (20, 20, 20)
GREY = (110, 110, 110)
LIGHT = (236, 236, 236)
WHITE = (255, 255, 255)
MARGIN = 60
RIGHT = 767  # right margin on the 827-unit-wide page


@dataclass
class PrintedInvoice:
    """Everything one invoice prints, as strings, plus the look chosen for it."""

    layout: str
    family: str
    accent: tuple[int, int, int]
    title: str
    vendor: list[str]
    customer_label: str
    customer: list[str]
    meta: list[tuple[str, str]]
    headers: tuple[str, str, str, str]
    rows: list[tuple[str, str, str, str]]
    totals: list[tuple[str, str]]
    footer: list[str] = field(default_factory=list)


def a4_size(dpi: int) -> tuple[int, int]:
    """Pixel size of an A4 page at ``dpi`` (827 x 1169 at 100 dpi)."""
    return round(dpi * A4_MM[0] / 25.4), round(dpi * A4_MM[1] / 25.4)


@lru_cache(maxsize=256)
def load_font(name: str, px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A TrueType font at ``px`` pixels; falls back to DejaVuSans, then Pillow's built-in font.

    Args:
        name: File name inside ``FONT_DIR``.
        px: Font size in pixels.

    Returns:
        A font usable by ``ImageDraw.text``.
    """
    for candidate in (name, FAMILIES["sans"][0]):
        try:
            return ImageFont.truetype(str(FONT_DIR / candidate), px)
        except OSError:
            continue
    return ImageFont.load_default(size=px)


class Page:
    """A blank A4 page with drawing helpers in 100-dpi units that records every string drawn."""

    def __init__(self, dpi: int, family: str) -> None:
        self.scale = dpi / 100.0
        self.image = Image.new("RGB", a4_size(dpi), WHITE)
        self.draw = ImageDraw.Draw(self.image)
        self.family = FAMILIES.get(family, FAMILIES["sans"])
        self.drawn: list[str] = []
        self.boxes: list[tuple[int, int, int, int]] = []  # pixel bbox of each drawn string, same order

    def px(self, value: float) -> int:
        return round(value * self.scale)

    def font(self, size: float, bold: bool = False):
        return load_font(self.family[1 if bold else 0], max(1, self.px(size)))

    def width(self, text: str, size: float = 16, bold: bool = False) -> float:
        """Width of ``text`` in page units."""
        return self.draw.textlength(text, font=self.font(size, bold)) / self.scale

    def text(self, x: float, y: float, text: str, size: float = 16, bold: bool = False,
             align: str = "left", fill: tuple[int, int, int] = BLACK) -> None:
        """Draw ``text`` with its top at ``y``; ``x`` is its left edge, right edge or centre per ``align``."""
        anchor = {"left": "la", "right": "ra", "center": "ma"}[align]
        xy, font = (self.px(x), self.px(y)), self.font(size, bold)
        self.draw.text(xy, text, font=font, fill=fill, anchor=anchor)
        self.drawn.append(text)
        self.boxes.append(self.draw.textbbox(xy, text, font=font, anchor=anchor))

    def rule(self, x0: float, y0: float, x1: float, y1: float, fill=GREY, width: float = 1) -> None:
        self.draw.line((self.px(x0), self.px(y0), self.px(x1), self.px(y1)), fill=fill, width=max(1, self.px(width)))

    def box(self, x0: float, y0: float, x1: float, y1: float, fill=None, outline=None, width: float = 1) -> None:
        self.draw.rectangle((self.px(x0), self.px(y0), self.px(x1), self.px(y1)), fill=fill, outline=outline,
                            width=max(1, self.px(width)))


def _lines(page: Page, x: float, y: float, lines: list[str], first_bold: bool = False, size: float = 16,
           align: str = "left", step: float = 22) -> float:
    """Draw a block of lines; returns the y below it."""
    for k, line in enumerate(lines):
        bold = first_bold and k == 0
        page.text(x, y, line, size=size + (4 if bold else 0), bold=bold, align=align)
        y += step + (6 if bold else 0)
    return y


def _pairs(page: Page, x_label: float, x_value: float, y: float, pairs: list[tuple[str, str]],
           step: float = 24, bold_last: bool = False) -> float:
    """Label/value rows: labels left-aligned at ``x_label``, values right-aligned at ``x_value``."""
    for k, (label, value) in enumerate(pairs):
        bold = bold_last and k == len(pairs) - 1
        size = 18 if bold else 16
        page.text(x_label, y, label, size=size, bold=True)
        page.text(x_value, y, value, size=size, bold=bold, align="right")
        y += step + (4 if bold else 0)
    return y


TOTALS_X = 380  # left edge of the totals labels; leaves room for long labels and long amounts
COLUMNS = (MARGIN + 8, 500, 640, RIGHT - 8)  # description left edge; qty, unit, amount right edges


def _table(page: Page, y: float, inv: PrintedInvoice, header_fill, grid: bool, zebra: bool,
           header_color=BLACK) -> float:
    """The line-item table; returns the y below it."""
    row_h = 26
    page.box(MARGIN, y, RIGHT, y + row_h + 4, fill=header_fill)
    _table_row(page, y + 5, inv.headers, bold=True, fill=header_color)
    top, y = y, y + row_h + 4
    for k, row in enumerate(inv.rows):
        if zebra and k % 2:
            page.box(MARGIN, y, RIGHT, y + row_h, fill=LIGHT)
        _table_row(page, y + 4, row)
        y += row_h
        if grid:
            page.rule(MARGIN, y, RIGHT, y)
    if grid:
        page.box(MARGIN, top, RIGHT, y, outline=GREY)
        for x in (430, 520, 655):
            page.rule(x, top, x, y)
    else:
        page.rule(MARGIN, y, RIGHT, y, fill=BLACK)
    return y


def _table_row(page: Page, y: float, cells: tuple[str, str, str, str], bold: bool = False, fill=BLACK) -> None:
    page.text(COLUMNS[0], y, cells[0], bold=bold, fill=fill)
    for x, cell in zip(COLUMNS[1:], cells[1:]):
        page.text(x, y, cell, bold=bold, align="right", fill=fill)


def _footer(page: Page, inv: PrintedInvoice) -> None:
    y = 1169 - 50 - 20 * len(inv.footer)
    for line in inv.footer:
        page.text(827 / 2, y, line, size=14, align="center", fill=GREY)
        y += 20


def layout_classic(page: Page, inv: PrintedInvoice) -> None:
    """Vendor top-left, title and meta top-right, bill-to block, ruled table, totals bottom-right."""
    y_vendor = _lines(page, MARGIN, MARGIN, inv.vendor, first_bold=True)
    page.text(RIGHT, MARGIN, inv.title, size=32, bold=True, align="right", fill=inv.accent)
    y_meta = _pairs(page, 470, RIGHT, MARGIN + 60, inv.meta)
    y = max(y_vendor, y_meta) + 30
    page.text(MARGIN, y, inv.customer_label, bold=True, fill=inv.accent)
    y = _lines(page, MARGIN, y + 26, inv.customer) + 30
    y = _table(page, y, inv, header_fill=LIGHT, grid=False, zebra=False)
    _pairs(page, TOTALS_X, RIGHT, y + 20, inv.totals, step=26, bold_last=True)
    _footer(page, inv)


def layout_banner(page: Page, inv: PrintedInvoice) -> None:
    """Full-width coloured banner with the vendor centred, meta in three centred columns, zebra table."""
    page.box(0, 0, 827, 140, fill=inv.accent)
    page.text(827 / 2, 28, inv.vendor[0], size=28, bold=True, align="center", fill=WHITE)
    details = inv.vendor[1:]
    for k in range(0, min(len(details), 4), 2):
        line = "  |  ".join(details[k:k + 2])
        page.text(827 / 2, 72 + 11 * k, line, size=15, align="center", fill=WHITE)
    page.text(827 / 2, 160, inv.title, size=30, bold=True, align="center")
    y = 215
    columns = max(3, len(inv.meta))
    for k, (label, value) in enumerate(inv.meta):
        x = MARGIN + (RIGHT - MARGIN) * (k + 0.5) / columns
        page.text(x, y, label, size=14, bold=True, align="center", fill=GREY)
        page.text(x, y + 22, value, align="center")
    y += 80
    page.text(MARGIN, y, inv.customer_label.upper(), size=15, bold=True, fill=inv.accent)
    y = _lines(page, MARGIN, y + 24, inv.customer, first_bold=True) + 25
    y = _table(page, y, inv, header_fill=inv.accent, grid=False, zebra=True, header_color=WHITE)
    y = _pairs(page, TOTALS_X, RIGHT - 10, y + 20, inv.totals[:-1], step=26)
    label, value = inv.totals[-1]
    page.box(TOTALS_X - 10, y - 4, RIGHT, y + 32, fill=inv.accent)
    page.text(TOTALS_X, y + 4, label, size=18, bold=True, fill=WHITE)
    page.text(RIGHT - 10, y + 4, value, size=18, bold=True, align="right", fill=WHITE)
    _footer(page, inv)


def _titled_box(page: Page, x0: float, x1: float, y: float, title: str, lines: list[str], accent) -> float:
    height = 36 + 22 * len(lines) + 16
    page.box(x0, y, x1, y + height, outline=GREY)
    page.box(x0, y, x1, y + 28, fill=accent)
    page.text(x0 + 10, y + 5, title, size=15, bold=True, fill=WHITE)
    _lines(page, x0 + 10, y + 38, lines, first_bold=False, size=15)
    return y + height


def _meta_grid(page: Page, y: float, meta: list[tuple[str, str]]) -> float:
    """Meta as a bordered grid: a label row over a value row."""
    width = (RIGHT - MARGIN) / len(meta)
    page.box(MARGIN, y, RIGHT, y + 28, fill=LIGHT)
    for k, (label, value) in enumerate(meta):
        x = MARGIN + width * k
        page.text(x + 10, y + 5, label, size=15, bold=True)
        page.text(x + 10, y + 35, value, size=16)
        if k:
            page.rule(x, y, x, y + 62)
    page.box(MARGIN, y, RIGHT, y + 62, outline=GREY)
    page.rule(MARGIN, y + 28, RIGHT, y + 28)
    return y + 62


def layout_boxed(page: Page, inv: PrintedInvoice) -> None:
    """Title top-left, vendor and customer in two titled boxes, meta grid, full-grid table, totals box."""
    page.text(MARGIN, MARGIN - 10, inv.title, size=34, bold=True, fill=inv.accent)
    page.text(RIGHT, MARGIN, inv.vendor[0], size=20, bold=True, align="right")
    y = MARGIN + 60
    bottom = max(_titled_box(page, MARGIN, 405, y, "From", inv.vendor, inv.accent),
                 _titled_box(page, 422, RIGHT, y, inv.customer_label, inv.customer, inv.accent))
    y = _meta_grid(page, bottom + 25, inv.meta) + 25
    y = _table(page, y, inv, header_fill=LIGHT, grid=True, zebra=False) + 20
    height = 26 * len(inv.totals) + 20
    page.box(TOTALS_X - 12, y, RIGHT, y + height, outline=BLACK, width=2)
    _pairs(page, TOTALS_X, RIGHT - 12, y + 10, inv.totals, step=26, bold_last=True)
    _footer(page, inv)


def _mono_row(cells: tuple[str, str, str, str]) -> str:
    desc = cells[0] if len(cells[0]) <= 32 else cells[0][:31] + "."
    return f"{desc:<32}{cells[1]:>6}{cells[2]:>13}{cells[3]:>14}"


def layout_ledger(page: Page, inv: PrintedInvoice) -> None:
    """Typewriter style: monospaced text lines, dashed separators, dotted leaders before the totals."""
    x, size, step = MARGIN + 20, 15, 22
    y = _lines(page, 827 / 2, MARGIN, inv.vendor, first_bold=True, size=size, align="center") + 10
    page.text(827 / 2, y, f"*** {inv.title} ***", size=20, bold=True, align="center")
    y += 45
    width = max(len(label) for label, _ in inv.meta) + 2
    for label, value in inv.meta:
        page.text(x, y, f"{label + ':':<{width}}{value}", size=size)
        y += step
    y += 15
    page.text(x, y, inv.customer_label + ":", size=size, bold=True)
    y = _lines(page, x, y + step, inv.customer, size=size) + 15
    rule = "-" * 65
    for line in (rule, _mono_row(inv.headers), rule):
        page.text(x, y, line, size=size)
        y += step
    for row in inv.rows:
        page.text(x, y, _mono_row(row), size=size)
        y += step
    page.text(x, y, rule, size=size)
    y += step + 8
    for k, (label, value) in enumerate(inv.totals):
        bold = k == len(inv.totals) - 1
        page.text(x, y, f"{label + ' ':.<46} {value:>18}", size=size, bold=bold)
        y += step + 4
    _footer(page, inv)


LAYOUTS: dict[str, Callable[[Page, PrintedInvoice], None]] = {
    "classic": layout_classic,
    "banner": layout_banner,
    "boxed": layout_boxed,
    "ledger": layout_ledger,
}
"""Layout name -> drawing function; the generator picks one per document."""


def render(inv: PrintedInvoice, dpi: int) -> Page:
    """Draw one invoice on a clean A4 page.

    Args:
        inv: The invoice's printed strings and look; ``inv.layout`` must be a key of ``LAYOUTS``.
        dpi: Resolution of the page.

    Returns:
        The page: ``.image`` (RGB), ``.drawn`` (every string drawn) and ``.boxes`` (their pixel boxes).

    Raises:
        KeyError: ``inv.layout`` is not a known layout.
    """
    page = Page(dpi, "mono" if inv.layout == "ledger" else inv.family)
    LAYOUTS[inv.layout](page, inv)
    return page
