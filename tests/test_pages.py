"""Document loading: every bad input becomes a DocumentError with a readable reason; good ones load.

The bad inputs are generated here in a temporary folder (no checked-in binaries); the good ones are
the shared real datasets, skipped with a reason where that folder is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from invoicelab.data.pages import DocumentError, file_kind, load_pages, pdf_text
from tests.bad_inputs.corpus import bomb_png as _bomb_png
from tests.bad_inputs.corpus import encrypted_pdf as _encrypted_pdf
from tests.bad_inputs.corpus import image_bytes as _image_bytes
from tests.bad_inputs.corpus import png_header_only as _png_header_only

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _needs(folder: str) -> Path:
    path = DATA / folder
    if not (path / "gt.jsonl").is_file():
        pytest.skip(f"shared dataset {path} is absent (expected beside the repository)")
    return path


def _gt(folder: str) -> list[dict]:
    return [json.loads(line) for line in (_needs(folder) / "gt.jsonl").read_text().splitlines() if line]


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
    path = _write(tmp_path, "bomb.png", _bomb_png(20_000))
    assert path.stat().st_size < 200_000  # 400 M pixels in a small file: a bomb
    reason = _reason(path)
    assert reason.startswith("image too large:") and "max_pixels" in reason  # from the header, never decoded


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
