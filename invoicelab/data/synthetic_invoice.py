"""The content and look of one synthetic invoice, drawn from its own random generator, and what it prints.

``make_invoice`` draws the content (parties, line items, dates, tax rate; exact integer cents),
``make_look`` its presentation (layout, font, formats, labels); ``printed_fields`` and
``normalized_fields`` give the ground truth as drawn and canonical, and ``to_printed`` everything the
page shows. Every draw comes from the ``random.Random`` passed in: never the clock or global random
state. This module never imports Ray and never reads or writes files.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from invoicelab.data.synthetic_layout import LAYOUTS, PrintedInvoice
from invoicelab.data.synthetic_regions import (
    DATE_FORMATS,
    REGIONS,
    Region,
    decimal_string,
    format_money,
    format_number,
)

BRANDS = ("Northwind", "Bluebird", "Summit", "Redwood", "Silverline", "Granite", "Harbor", "Maple", "Orion",
          "Pioneer", "Crescent", "Evergreen", "Falcon", "Ironbridge", "Lakeside", "Meridian", "Nova", "Pacific",
          "Quantum", "Riverside", "Sterling", "Apex", "Beacon", "Cobalt", "Everest", "Horizon", "Keystone", "Lumen")
TRADES = ("Trading", "Logistics", "Consulting", "Supplies", "Systems", "Design", "Engineering", "Foods",
          "Electronics", "Printing", "Software", "Office Solutions", "Media", "Analytics", "Textiles", "Builders")
ITEMS = ("Consulting services", "Web hosting (annual)", "Printer paper A4, 500 sheets", "Toner cartridge",
         "Laptop stand", "USB-C cable 2m", "Office chair", "Software licence", "Maintenance visit",
         "Graphic design", "Translation services", "Catering", "Delivery charge", "Cloud storage 1TB",
         "Training workshop", "Wireless mouse", "Desk lamp", "Coffee beans 1kg", "Cleaning service",
         "Network switch 24-port", "Monitor 27 inch", "Project management", "Installation fee",
         "Business cards (box)", "Ink refill", "Server rack rental", "Legal review", "Photography session")
TITLES = ("INVOICE", "Invoice", "TAX INVOICE", "Tax Invoice", "INVOICE / BILL")
NUMBER_LABELS = ("Invoice No.", "Invoice #", "Invoice Number", "Inv. No.", "No.")
DATE_LABELS = ("Date", "Invoice Date", "Date of Issue", "Issue Date")
DUE_LABELS = ("Due Date", "Payment Due", "Due")
BILL_LABELS = ("Bill To", "Billed To", "Invoice To", "Customer")
SUBTOTAL_LABELS = ("Subtotal", "Sub-total", "Net Amount", "Subtotal (excl. tax)")
TOTAL_LABELS = ("Total", "Amount Due", "TOTAL", "Grand Total", "Balance Due", "Total Due")
ACCENTS = ((31, 58, 110), (120, 30, 40), (20, 90, 60), (60, 60, 60), (90, 40, 110), (0, 85, 120))
DUE_DAYS = (0, 7, 10, 14, 15, 30, 30, 45, 60)


@dataclass(frozen=True)
class LineItem:
    description: str
    quantity: int
    unit_cents: int

    @property
    def amount_cents(self) -> int:
        return self.quantity * self.unit_cents


@dataclass(frozen=True)
class Invoice:
    """The content of one invoice, before formatting."""

    number: str
    issued: dt.date
    due: dt.date
    vendor: list[str]
    customer: list[str]
    region: Region
    items: list[LineItem]
    rate: Decimal  # percent

    @property
    def subtotal_cents(self) -> int:
        return sum(item.amount_cents for item in self.items)

    @property
    def tax_cents(self) -> int:
        return int((Decimal(self.subtotal_cents) * self.rate / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))

    @property
    def total_cents(self) -> int:
        return self.subtotal_cents + self.tax_cents


def _company(rng: random.Random, region: Region, avoid: str = "") -> str:
    while True:
        name = f"{rng.choice(BRANDS)} {rng.choice(TRADES)} {rng.choice(region.suffixes)}"
        if name != avoid:
            return name


def _party(rng: random.Random, region: Region, name: str, contact: bool) -> list[str]:
    """Name, street, city and optionally phone and email lines."""
    lines = [name, f"{rng.randint(1, 250)} {rng.choice(region.streets)}", rng.choice(region.cities)]
    if contact:
        slug = "".join(ch for ch in name.split()[0].lower() if ch.isalnum())
        lines.append("Tel: " + region.phone.format(a=rng.randint(200, 989), b=rng.randint(0, 9999)))
        lines.append(f"{rng.choice(('billing', 'info', 'accounts'))}@{slug}.{region.tld}")
    return lines


def _invoice_number(rng: random.Random, issued: dt.date) -> str:
    n, y = rng.randint(1, 99999), issued.year
    return rng.choice((f"INV-{y}-{n % 10000:04d}", f"{y}/{n % 1000:03d}", f"A-{n:05d}", f"F{y}-{n:05d}",
                       f"{n:06d}", f"IN{y % 100:02d}{issued.month:02d}-{n % 1000:03d}", f"SI-{n:05d}"))


def _unit_cents(rng: random.Random) -> int:
    """A plausible unit price between 1.00 and 1,585.00, often a round or .99 price."""
    value = int(10 ** rng.uniform(2, 5.2))
    ending = rng.random()
    if ending < 0.3:
        return max(100, value // 100 * 100)
    if ending < 0.45:
        return value // 100 * 100 + 99
    return value


def make_invoice(rng: random.Random) -> Invoice:
    """Draw the content of one invoice.

    Args:
        rng: The document's own random generator.

    Returns:
        An invoice with 1-15 line items and a due date on or after the issue date.
    """
    region = REGIONS[rng.choice(sorted(REGIONS))]
    issued = dt.date(2019, 1, 1) + dt.timedelta(days=rng.randint(0, 7 * 365))
    vendor = _company(rng, region)
    items = [LineItem(name, rng.choice((1, 1, 1, 2, 3, 4, 5, 6, 10, 12, 20, 25)), _unit_cents(rng))
             for name in rng.sample(ITEMS, rng.randint(1, 15))]
    return Invoice(number=_invoice_number(rng, issued), issued=issued,
                   due=issued + dt.timedelta(days=rng.choice(DUE_DAYS)),
                   vendor=_party(rng, region, vendor, contact=rng.random() < 0.7),
                   customer=_party(rng, region, _company(rng, region, avoid=vendor), contact=False),
                   region=region, items=items, rate=Decimal(rng.choice(region.rates)))


@dataclass(frozen=True)
class Look:
    """How one invoice is printed: layout, font, formats and labels."""

    layout: str
    family: str
    date_format: str
    code_style: bool
    currency_line: bool
    accent: tuple[int, int, int]
    labels: dict[str, str]


def make_look(rng: random.Random, inv: Invoice) -> Look:
    """Draw the presentation of one invoice (layout, font family, formats, labels)."""
    rate = f"{inv.rate.normalize():f}"
    tax_name = rng.choice(inv.region.tax_names)
    labels = {"title": rng.choice(TITLES), "number": rng.choice(NUMBER_LABELS), "date": rng.choice(DATE_LABELS),
              "due": rng.choice(DUE_LABELS), "bill": rng.choice(BILL_LABELS),
              "subtotal": rng.choice(SUBTOTAL_LABELS), "total": rng.choice(TOTAL_LABELS),
              "tax": rng.choice((f"{tax_name} ({rate}%)", f"{tax_name} {rate}%"))}
    return Look(layout=rng.choice(sorted(LAYOUTS)), family=rng.choice(("sans", "serif", "condensed")),
                date_format=rng.choice(inv.region.dates), code_style=rng.random() < 0.2,
                currency_line=rng.random() < 0.4, accent=rng.choice(ACCENTS), labels=labels)


def printed_fields(inv: Invoice, look: Look) -> dict[str, str]:
    """The ground-truth values exactly as they appear on the page."""
    date = DATE_FORMATS[look.date_format]
    money = lambda cents: format_money(cents, inv.region, look.code_style)  # noqa: E731
    show_code = look.code_style or look.currency_line
    return {"invoice_number": inv.number, "invoice_date": date(inv.issued), "due_date": date(inv.due),
            "vendor_name": inv.vendor[0], "customer_name": inv.customer[0],
            "currency": inv.region.code if show_code else inv.region.symbol,
            "subtotal": money(inv.subtotal_cents), "tax": money(inv.tax_cents), "total": money(inv.total_cents)}


def normalized_fields(inv: Invoice) -> dict[str, str]:
    """The canonical ground truth: ISO dates, ISO currency code, amounts as ``"1234.56"``."""
    return {"invoice_number": inv.number, "invoice_date": inv.issued.isoformat(), "due_date": inv.due.isoformat(),
            "vendor_name": inv.vendor[0], "customer_name": inv.customer[0], "currency": inv.region.code,
            "subtotal": decimal_string(inv.subtotal_cents), "tax": decimal_string(inv.tax_cents),
            "total": decimal_string(inv.total_cents)}


def to_printed(inv: Invoice, look: Look) -> PrintedInvoice:
    """Everything the page shows, as strings, for the layout to draw."""
    fields, labels, style = printed_fields(inv, look), look.labels, inv.region.number
    meta = [(labels["number"], fields["invoice_number"]), (labels["date"], fields["invoice_date"]),
            (labels["due"], fields["due_date"])]
    if look.currency_line:
        meta.append(("Currency", inv.region.code))
    rows = [(it.description, str(it.quantity), format_number(it.unit_cents, style),
             format_number(it.amount_cents, style)) for it in inv.items]
    days = (inv.due - inv.issued).days
    terms = "Due on receipt" if days == 0 else f"Payment terms: {days} days net"
    return PrintedInvoice(
        layout=look.layout, family=look.family, accent=look.accent, title=labels["title"], vendor=inv.vendor,
        customer_label=labels["bill"], customer=inv.customer, meta=meta,
        headers=("Description", "Qty", "Unit Price", "Amount"), rows=rows,
        totals=[(labels["subtotal"], fields["subtotal"]), (labels["tax"], fields["tax"]),
                (labels["total"], fields["total"])],
        footer=[terms, "Thank you for your business!"])
