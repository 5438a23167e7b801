"""Deterministic synthetic invoices: random but plausible data, rendered with Pillow, with exact ground truth.

``generate(out_dir, n, seed, spec)`` writes ``out_dir/images/synth_NNNNN.jpg`` and ``out_dir/gt.jsonl`` in the
same format as the shared SROIE set: one JSON object per line,
``{"doc_id", "file", "fields", "normalized", "meta"}``.

Fields (``SYNTHETIC_FIELDS`` holds their FieldSpec arguments):

- ``invoice_number``: the invoice id as printed (``INV-2024-0012``, ``2024/118``, ``A-99812``, ``F2024-00017``).
- ``invoice_date``, ``due_date``: printed in one of several formats (``2024-03-05``, ``05/03/2024``,
  ``March 5, 2024``, ``05.03.2024``, ``5 Mar 2024``); normalised to ISO. Numeric dates are always day-first.
- ``vendor_name``, ``customer_name``: company names as printed.
- ``currency``: printed as the symbol seen in the amounts (``$``, ``€``, ``RM``) or as the code where the invoice
  prints ``Currency: EUR`` or code-style amounts; normalised to the ISO code (USD, EUR, GBP, CHF, MYR, INR).
- ``subtotal``, ``tax``, ``total``: printed with currency and local number format (``$1,234.56``,
  ``1.234,56 €``, ``CHF 1'234.56``, ``Rs. 1,23,456.78``); normalised to ``"1234.56"``.

``fields`` holds the values exactly as drawn on the page; ``normalized`` the canonical values; ``meta`` the
layout, fonts, formats, line items and perturbations (informational). All arithmetic is exact in integer cents:
sum of line amounts = subtotal, tax = round_half_up(subtotal * rate), subtotal + tax = total.

Determinism: document ``i`` of seed ``s`` depends only on ``(s, i)`` for its content and on ``(s, i, spec)`` for
its pixels; never on ``n``, the clock or global random state. This module never imports Ray, never reads the
network and writes only inside ``out_dir``.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from invoicelab.config import SyntheticSpec
from invoicelab.data.synthetic_layout import LAYOUTS, Page, PrintedInvoice, render

SYNTHETIC_FIELDS: dict[str, dict] = {
    "invoice_number": {"type": "id", "description": "The invoice's number as printed next to its label "
                       "(Invoice No., Invoice #).", "example": "INV-2024-0012"},
    "invoice_date": {"type": "date", "description": "Date the invoice was issued.", "example": "05/03/2024",
                     "day_first": True},
    "due_date": {"type": "date", "description": "Date by which payment is due.", "example": "04/04/2024",
                 "day_first": True},
    "vendor_name": {"type": "text", "description": "Name of the company that issued the invoice (the seller).",
                    "example": "Northwind Logistics GmbH", "match": "fuzzy"},
    "customer_name": {"type": "text", "description": "Name of the company billed (Bill To).",
                      "example": "Harbor Design Ltd", "match": "fuzzy"},
    "currency": {"type": "currency", "description": "Currency of the amounts, as an ISO 4217 code.",
                 "example": "EUR"},
    "subtotal": {"type": "amount", "description": "Sum of the line items before tax.", "example": "1,234.50"},
    "tax": {"type": "amount", "description": "Tax amount (VAT, GST, sales tax).", "example": "98.76"},
    "total": {"type": "amount", "description": "Total amount due, tax included.", "example": "1,333.26"},
}
"""Field name -> ``FieldSpec`` keyword arguments for experiments on synthetic data."""

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
DATE_FORMATS = {
    "iso": lambda d: d.isoformat(),
    "dmy_slash": lambda d: f"{d.day:02d}/{d.month:02d}/{d.year}",
    "dmy_dot": lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
    "dmy_dash": lambda d: f"{d.day:02d}-{d.month:02d}-{d.year}",
    "long_mdy": lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    "mon_d_y": lambda d: f"{MONTHS[d.month - 1][:3]} {d.day}, {d.year}",
    "d_mon_y": lambda d: f"{d.day} {MONTHS[d.month - 1][:3]} {d.year}",
    "d_month_y": lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
}


@dataclass(frozen=True)
class Region:
    """Conventions of one currency's invoices: money and date formats, tax, names and addresses."""

    code: str
    symbol: str
    number: str  # grouping style: us 1,234.56 | eu 1.234,56 | ch 1'234.56 | in 1,23,456.78
    symbol_after: bool
    tax_names: tuple[str, ...]
    rates: tuple[str, ...]
    suffixes: tuple[str, ...]
    streets: tuple[str, ...]
    cities: tuple[str, ...]
    phone: str
    dates: tuple[str, ...]
    tld: str


REGIONS: dict[str, Region] = {r.code: r for r in (
    Region("USD", "$", "us", False, ("Tax", "Sales Tax"), ("0", "4", "6", "6.25", "7", "8", "8.875"),
           ("Inc.", "LLC", "Corp.", "Co."), ("Main Street", "Oak Avenue", "Market Street", "Elm Drive"),
           ("Austin, TX 78701", "Denver, CO 80202", "Portland, OR 97204", "Boston, MA 02108"),
           "+1 ({a}) 555-{b:04d}", ("long_mdy", "mon_d_y", "iso"), "com"),
    Region("EUR", "€", "eu", True, ("VAT", "MwSt.", "TVA", "IVA"), ("7", "10", "19", "20", "21"),
           ("GmbH", "S.A.", "B.V.", "SARL", "S.r.l."), ("Hauptstrasse", "Rue de la Paix", "Keizersgracht", "Via Roma"),
           ("10115 Berlin", "75002 Paris", "1017 Amsterdam", "20121 Milano"),
           "+49 {a} {b:04d}", ("dmy_dot", "dmy_slash", "iso", "d_month_y"), "eu"),
    Region("GBP", "£", "us", False, ("VAT",), ("5", "20"), ("Ltd", "PLC", "& Sons Ltd"),
           ("High Street", "Station Road", "Church Lane", "Victoria Road"),
           ("Leeds LS1 4AP", "Bristol BS1 5TR", "Manchester M1 1AE", "London EC1A 1BB"),
           "+44 20 {a}{b:04d}", ("dmy_slash", "d_mon_y", "d_month_y", "iso"), "co.uk"),
    Region("CHF", "CHF", "ch", False, ("MWST",), ("2.6", "3.8", "8.1"), ("AG", "GmbH", "SA"),
           ("Bahnhofstrasse", "Seestrasse", "Rue du Rhone", "Marktgasse"),
           ("8001 Zurich", "3011 Bern", "1204 Geneve", "4051 Basel"),
           "+41 44 {a} {b:04d}", ("dmy_dot", "iso"), "ch"),
    Region("MYR", "RM", "us", False, ("SST", "Service Tax"), ("6", "8", "10"), ("Sdn Bhd", "Enterprise", "Trading"),
           ("Jalan Ampang", "Jalan Tun Razak", "Jalan Bukit Bintang", "Jalan Sultan Ismail"),
           ("50450 Kuala Lumpur", "10200 George Town", "80000 Johor Bahru", "47800 Petaling Jaya"),
           "+60 3-{a}{b:04d}", ("dmy_slash", "dmy_dash", "d_mon_y"), "com.my"),
    Region("INR", "Rs.", "in", False, ("GST", "IGST"), ("5", "12", "18", "28"), ("Pvt. Ltd.", "LLP", "Industries"),
           ("MG Road", "Linking Road", "Park Street", "Anna Salai"),
           ("Bengaluru 560001", "Mumbai 400050", "Kolkata 700016", "Chennai 600002"),
           "+91 {a} {b:04d} 210", ("dmy_slash", "dmy_dash", "d_mon_y", "iso"), "in"),
)}

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


def format_number(cents: int, style: str) -> str:
    """Format integer cents with a locale style: us ``1,234.56``, eu ``1.234,56``, ch ``1'234.56``,
    in ``1,23,456.78``.

    Args:
        cents: Non-negative amount in cents.
        style: One of ``us``, ``eu``, ``ch``, ``in``.

    Returns:
        The formatted number with two decimals.
    """
    whole, frac = divmod(cents, 100)
    digits = str(whole)
    if style == "in" and len(digits) > 3:
        head, tail = digits[:-3], digits[-3:]
        groups = [head[max(0, k - 2):k] for k in range(len(head), 0, -2)][::-1]
        grouped = ",".join(groups + [tail])
    else:
        grouped = f"{whole:,}".replace(",", {"eu": ".", "ch": "'"}.get(style, ","))
    return f"{grouped}{',' if style == 'eu' else '.'}{frac:02d}"


def format_money(cents: int, region: Region, code_style: bool) -> str:
    """An amount as printed: ``$1,234.56``, ``1.234,56 €``, ``RM 1,234.56``; with ``code_style``: ``USD 1,234.56``."""
    number = format_number(cents, region.number)
    mark = region.code if code_style else region.symbol
    if region.symbol_after:
        return f"{number} {mark}"
    return f"{mark}{number}" if len(mark) == 1 else f"{mark} {number}"


def decimal_string(cents: int) -> str:
    """Canonical amount: ``123456`` -> ``"1234.56"``."""
    return f"{cents // 100}.{cents % 100:02d}"


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


def perturb(image: Image.Image, spec: SyntheticSpec, rng: random.Random) -> tuple[Image.Image, dict]:
    """Rotate, blur and add noise to a page, each drawn uniformly up to the spec's maximum.

    Args:
        image: The clean RGB page.
        spec: Maximum rotation (degrees), blur radius (px) and noise amplitude (fraction of 255).
        rng: The document's perturbation generator (separate from its content generator).

    Returns:
        The perturbed page (same size) and the values applied.
    """
    applied = {"rotation": round(rng.uniform(-spec.rotation, spec.rotation), 3),
               "blur": round(rng.uniform(0, spec.blur), 3), "noise": round(rng.uniform(0, spec.noise), 4),
               "jpeg_quality": spec.jpeg_quality}
    noise_seed = rng.getrandbits(64)
    if applied["rotation"]:
        image = image.rotate(applied["rotation"], resample=Image.Resampling.BICUBIC, expand=False,
                             fillcolor=(255, 255, 255))
    if applied["blur"]:
        image = image.filter(ImageFilter.GaussianBlur(applied["blur"]))
    if applied["noise"]:
        amplitude = applied["noise"] * 255
        pixels = np.asarray(image, dtype=np.float32)
        grain = np.random.default_rng(noise_seed).random(pixels.shape[:2], dtype=np.float32) * 2 - 1
        pixels += (grain * amplitude)[..., None]  # grey grain, like scanner noise
        image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB")
    return image, applied


def build_document(seed: int, i: int, spec: SyntheticSpec) -> tuple[Image.Image, dict, Page]:
    """Build document ``i`` of ``seed``: its page, its gt.jsonl record and the strings drawn.

    Args:
        seed: Generator seed.
        i: Document index; the content depends only on ``(seed, i)``.
        spec: Resolution and perturbations.

    Returns:
        (final page image, gt record, the clean rendered ``Page`` with the strings drawn and their boxes).
    """
    rng = random.Random(f"{seed}-{i}")
    inv = make_invoice(rng)
    look = make_look(rng, inv)
    page = render(to_printed(inv, look), spec.dpi)
    image, applied = perturb(page.image, spec, random.Random(f"{seed}-{i}-perturb"))
    doc_id = f"synth_{i:05d}"
    items = [{"description": it.description, "quantity": it.quantity, "unit_price": decimal_string(it.unit_cents),
              "amount": decimal_string(it.amount_cents)} for it in inv.items]
    meta = {"width": image.width, "height": image.height, "dpi": spec.dpi, "layout": look.layout,
            "font": look.family if look.layout != "ledger" else "mono", "date_format": look.date_format,
            "number_format": inv.region.number, "currency_style": "code" if look.code_style else "symbol",
            "tax_rate": f"{inv.rate.normalize():f}", "n_items": len(items), "items": items,
            "labels": look.labels, "perturbations": applied, "seed": seed, "index": i}
    record = {"doc_id": doc_id, "file": f"images/{doc_id}.jpg", "fields": printed_fields(inv, look),
              "normalized": normalized_fields(inv), "meta": meta}
    return image, record, page


def generate(out_dir: Path, n: int, seed: int, spec: SyntheticSpec | None = None) -> Path:
    """Write ``n`` synthetic invoices and their ground truth.

    Args:
        out_dir: Folder to write into (created if missing); existing files of the same names are replaced.
        n: Number of invoices.
        seed: Generator seed; same ``(n, seed, spec)`` gives byte-identical gt.jsonl and images.
        spec: Resolution and perturbation knobs (default: 100 dpi, clean pages, JPEG quality 90).

    Returns:
        The path of ``out_dir/gt.jsonl``.

    Raises:
        ValueError: ``n`` is negative.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    spec = spec or SyntheticSpec()
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        image, record, _ = build_document(seed, i, spec)
        image.save(out_dir / record["file"], "JPEG", quality=spec.jpeg_quality)
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    gt_path = out_dir / "gt.jsonl"
    gt_path.write_text("".join(lines), encoding="utf-8", newline="\n")
    return gt_path
