"""Document loading: every bad input becomes a DocumentError with a readable reason; good ones load.

The bad inputs are generated here in a temporary folder (no checked-in binaries); the good ones are
the shared real datasets, skipped with a reason where that folder is absent.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from invoicelab.data.pages import DocumentError, file_kind, load_pages, pdf_text

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _needs(folder: str) -> Path:
    path = DATA / folder
    if not (path / "gt.jsonl").is_file():
        pytest.skip(f"shared dataset {path} is absent (expected beside the repository)")
    return path


def _gt(folder: str) -> list[dict]:
    return [json.loads(line) for line in (_needs(folder) / "gt.jsonl").read_text().splitlines() if line]


def _image_bytes(fmt: str, size=(400, 300)) -> bytes:
    img = Image.effect_noise(size, 60).convert("RGB")  # noise: no long runs, so truncation bites
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(width: int, height: int, idat: bytes) -> bytes:
    """A 1-bit greyscale PNG with the given IDAT payload (cheap to make at any declared size)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _bomb_png(side: int) -> bytes:
    """A valid all-black 1-bit PNG of side x side pixels: a few kB on disk, side*side pixels decoded."""
    row = b"\x00" * (1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return _png_header_only(side, side, idat)


# --- a hand-made encrypted PDF (standard security handler, RC4 40-bit, revision 2) -----------------

_PDF_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def _rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out, i, j = bytearray(), 0, 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def _encrypted_pdf(user_password: bytes) -> bytes:
    """A one-page PDF that opens only with ``user_password`` (PDF 1.3 spec, algorithms 3.2-3.4)."""

    def pad(pw: bytes) -> bytes:
        return (pw + _PDF_PAD)[:32]

    perms = -44
    file_id = hashlib.md5(b"invoicelab test").digest()
    owner = _rc4(hashlib.md5(pad(b"owner")).digest()[:5], pad(user_password))
    key = hashlib.md5(pad(user_password) + owner + struct.pack("<i", perms) + file_id).digest()[:5]
    user = _rc4(key, _PDF_PAD)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>" % (owner.hex().encode(), user.hex().encode(), perms),
    ]
    out = bytearray(b"%PDF-1.3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    ident = file_id.hex().encode()
    out += b"trailer\n<< /Size %d /Root 1 0 R /Encrypt 4 0 R /ID [<%s> <%s>] >>\n" % (len(objects) + 1, ident, ident)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _reason(path: Path, **kwargs) -> str:
    with pytest.raises(DocumentError) as info:
        load_pages(path, **kwargs)
    return str(info.value)


# --- bad inputs -----------------------------------------------------------------------------


def test_missing_file(tmp_path):
    assert _reason(tmp_path / "nope.jpg").startswith("file not found:")


def test_zero_byte_file(tmp_path):
    assert _reason(_write(tmp_path, "empty.pdf", b"")).startswith("empty file")


@pytest.mark.parametrize("fmt,suffix", [("JPEG", "jpg"), ("PNG", "png")])
def test_truncated_image(tmp_path, fmt, suffix):
    data = _image_bytes(fmt)
    path = _write(tmp_path, f"cut.{suffix}", data[: len(data) // 2])
    assert not ImageFile.LOAD_TRUNCATED_IMAGES  # the guard relies on Pillow's default, which we never change
    assert _reason(path).startswith("truncated or corrupt image:")


def test_text_file_with_image_extension(tmp_path):
    path = _write(tmp_path, "invoice.jpg", b"Invoice 42\nTotal: 12.50\n")
    assert _reason(path).startswith("not an image:")


def test_large_image_rejected_from_header_without_decoding(tmp_path):
    # 7000 x 7000 = 49 M pixels, under Pillow's own bomb limit: only our header check can stop it.
    # The pixel data is garbage, so decoding it would report a corrupt image instead.
    path = _write(tmp_path, "big.png", _png_header_only(7000, 7000, b"not zlib data"))
    reason = _reason(path, max_pixels=40_000_000)
    assert reason.startswith("image too large: 7000 x 7000 pixels exceeds max_pixels 40000000")


def test_decompression_bomb_png(tmp_path):
    start = time.perf_counter()
    path = _write(tmp_path, "bomb.png", _bomb_png(20_000))
    assert path.stat().st_size < 200_000  # 400 M pixels in a small file: a bomb
    reason = _reason(path)
    assert reason.startswith("image too large:") and "max_pixels" in reason
    assert time.perf_counter() - start < 20  # rejected from the header, never decoded


def test_corrupt_pdf(tmp_path):
    path = _write(tmp_path, "bad.pdf", b"%PDF-1.4\n" + bytes(range(256)) * 20)
    assert file_kind(path) == "pdf"
    assert _reason(path).startswith("corrupt PDF:")
    with pytest.raises(DocumentError, match="^corrupt PDF:"):
        pdf_text(path)


def test_pdf_name_without_pdf_header(tmp_path):
    assert _reason(_write(tmp_path, "fake.pdf", b"hello, not a pdf")).startswith("corrupt PDF:")


def test_encrypted_pdf(tmp_path):
    import pypdfium2 as pdfium

    path = _write(tmp_path, "locked.pdf", _encrypted_pdf(b"secret"))
    with pdfium.PdfDocument(path, password="secret") as pdf:  # a valid PDF: the password opens it
        assert len(pdf) == 1
    assert _reason(path).startswith("encrypted PDF (password required)")
    with pytest.raises(DocumentError, match=r"^encrypted PDF \(password required\)"):
        pdf_text(path)


def test_pdf_page_too_large_to_render(tmp_path):
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument.new()
    pdf.new_page(14_400, 14_400)  # 200 x 200 inches, the largest page PDF allows
    path = tmp_path / "huge.pdf"
    pdf.save(path)
    pdf.close()
    reason = _reason(path, dpi=150)
    assert reason.startswith("PDF page 1 at 150 dpi too large: 30000 x 30000 pixels exceeds max_pixels")


def test_pdf_text_of_an_image_is_an_error(tmp_path):
    path = _write(tmp_path, "receipt.png", _image_bytes("PNG"))
    with pytest.raises(DocumentError, match="^not a PDF"):
        pdf_text(path)


_MAGICS = [b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"%PDF-1.7\n", b"GIF89a", b"II*\x00", b"BM", b""]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(magic=st.sampled_from(_MAGICS), body=st.binary(max_size=600))
def test_garbage_only_ever_raises_document_error(tmp_path, magic, body):
    path = _write(tmp_path, "doc.bin", magic + body)
    try:
        pages = load_pages(path, max_pixels=4_000_000)
    except DocumentError as err:
        assert str(err)
    else:
        assert all(p.mode == "RGB" for p in pages)


# --- good inputs ----------------------------------------------------------------------------


def test_image_kinds_come_from_bytes_not_names(tmp_path):
    png_named_jpg = _write(tmp_path, "really_png.jpg", _image_bytes("PNG"))
    assert file_kind(png_named_jpg) == "image"
    [page] = load_pages(png_named_jpg)
    assert page.mode == "RGB" and page.size == (400, 300)


def test_multiframe_image_gives_first_frame_rgb(tmp_path):
    frames = [Image.new("P", (40, 30), i) for i in (1, 2)]
    for frame, colour in zip(frames, [(255, 0, 0), (0, 0, 255)]):
        frame.putpalette([0, 0, 0, *colour, *colour] + [0] * 759)
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    [page] = load_pages(path)
    assert page.mode == "RGB" and page.getpixel((5, 5)) == (255, 0, 0)


def test_sroie_receipts_load_at_their_size():
    for row in _gt("sroie")[:5]:
        [page] = load_pages(DATA / "sroie" / row["file"])
        assert page.mode == "RGB"
        assert page.size == (row["meta"]["width"], row["meta"]["height"])


def test_deepform_pdf_renders_at_dpi_and_page_limit():
    rows = {r["doc_id"][:8]: r for r in _gt("deepform_adbuy")}
    landscape = DATA / "deepform_adbuy" / rows["0e4719a3"]["file"]  # one US-letter landscape page
    assert [p.size for p in load_pages(landscape, dpi=150)] == [(1651, 1275)]
    assert [p.size for p in load_pages(landscape, dpi=72)] == [(792, 612)]
    four_pages = DATA / "deepform_adbuy" / rows["174fedd7"]["file"]
    assert rows["174fedd7"]["meta"]["pages"] == 4
    assert len(load_pages(four_pages, max_pages=2)) == 2
    assert len(load_pages(four_pages, max_pages=3)) == 3


def test_pdf_text_reads_invoice2data_text_layers():
    rows = {r["doc_id"]: r for r in _gt("invoice2data")}
    azure = pdf_text(DATA / "invoice2data" / rows["AzureInterior"]["file"])
    assert len(azure) == 1 and "INV/2023/03/0008" in azure[0] and "279.84" in azure[0]
    coolblue = pdf_text(DATA / "invoice2data" / rows["coolblue2"]["file"])
    assert "992288600" in coolblue[0] and "\r" not in coolblue[0]
    for row in rows.values():
        assert any(len(t) > 200 for t in pdf_text(DATA / "invoice2data" / row["file"]))
