"""Regions of the synthetic invoices: each currency's money and date formats, tax names, companies and addresses.

Pure tables and formatting functions; nothing random happens here (``synthetic_invoice`` draws from
these tables). This module never imports Ray and never reads or writes files.
"""

from __future__ import annotations

from dataclasses import dataclass

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
