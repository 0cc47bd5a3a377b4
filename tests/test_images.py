"""heylook.images: the address policy, data: URLs and base64, the size an image is shrunk to (as
tables); load_images against a real HTTP server on 127.0.0.1 (redirects, huge, missing and slow
bodies), and against bad bytes (not an image, truncated, decompression bombs), each a 400 naming
the image."""

from __future__ import annotations

import http.server
import io
import ipaddress
import ssl
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from heylook.errors import InvalidRequest
from heylook.images import MAX_IMAGES, MAX_REQUEST_PIXELS, fetch, load, load_images
from heylook.images.addresses import refusal
from heylook.images.decode import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from heylook.images.load import check_budget
from heylook.images.resize import DEFAULT_MAX_SIDE, target_size
from heylook.protocols.images import image_from_base64, image_from_data_url, image_from_url, image_url
from heylook.types import ImageInput


def encoded(image: Image.Image, kind: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


RED = encoded(Image.new("RGB", (40, 30), (255, 0, 0)))


# --- the address policy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "why", "why_allowed"),
    [
        ("93.184.216.34", None, None),
        ("2606:2800:220:1:248:1893:25c8:1946", None, None),
        ("127.0.0.1", "a loopback address", None),
        ("::1", "a loopback address", None),
        ("10.1.2.3", "a private address", None),
        ("172.16.0.1", "a private address", None),
        ("192.168.1.1", "a private address", None),
        ("fd00::1", "a private address", None),
        ("169.254.169.254", "a link-local address", None),  # cloud metadata
        ("fe80::1", "a link-local address", None),
        ("100.64.0.1", "a reserved address", None),  # carrier-grade NAT
        ("240.0.0.1", "a private address", None),  # reserved; Python counts it private
        ("::ffff:127.0.0.1", "a loopback address", None),  # IPv4-mapped
        ("2002:7f00:1::", "a loopback address", None),  # 6to4 around 127.0.0.1
        ("0.0.0.0", "an unspecified address", "an unspecified address"),
        ("::", "an unspecified address", "an unspecified address"),
        ("224.0.0.1", "a multicast address", "a multicast address"),
        ("ff02::1", "a multicast address", "a multicast address"),
    ],
)
def test_which_addresses_are_refused(address: str, why: str | None, why_allowed: str | None) -> None:
    assert refusal(ipaddress.ip_address(address)) == why
    assert refusal(ipaddress.ip_address(address), allow_private=True) == why_allowed


# --- data: URLs and base64 -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "data"),
    [
        ("data:image/png;base64,iVBORw0KGgo=", b"\x89PNG\r\n\x1a\n"),
        ("DATA:image/png;BASE64,iVBORw0KGgo", b"\x89PNG\r\n\x1a\n"),  # no padding, any case
        ("data:;base64,aGk=", b"hi"),
        ("data:image/jpeg;charset=x;base64,aG k=\n", b"hi"),  # whitespace is ignored
        ("data:application/octet-stream;base64,-_8=", b"\xfb\xff"),  # URL-safe alphabet
    ],
)
def test_data_urls_decode(url: str, data: bytes) -> None:
    assert image_from_data_url(url, "where") == ImageInput(data=data, where="where")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("data:image/png,rawbytes", "without ;base64"),
        ("data:text/html;base64,aGk=", "not an image"),
        ("data:image/png;base64,@@@@", "not valid base64"),
        ("data:image/png;base64,", "is empty"),
        ("https://example.com/a.png", "not a data: URL"),
    ],
)
def test_bad_data_urls_name_the_part(url: str, words: str) -> None:
    with pytest.raises(InvalidRequest, match=words) as caught:
        image_from_data_url(url, "messages[0].content[1]")
    assert caught.value.param == "messages[0].content[1]"


@pytest.mark.parametrize(
    ("url", "image"),
    [
        ("https://example.com/a.png", ImageInput(url="https://example.com/a.png", where="w")),
        (" HTTP://example.com/a.png ", ImageInput(url="HTTP://example.com/a.png", where="w")),
        ("data:image/png;base64,aGk=", ImageInput(data=b"hi", where="w")),
    ],
)
def test_image_urls(url: str, image: ImageInput) -> None:
    assert image_from_url(url, "w") == image


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://x", "a.png", ""])
def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequest, match="data: URL or an http") as caught:
        image_from_url(url, "w")
    assert caught.value.param == "w"


def test_base64_too_large_is_refused_before_decoding() -> None:
    with pytest.raises(InvalidRequest, match="larger than"):
        image_from_base64("A" * (30 * 2**20), "w")


def test_an_image_becomes_a_url_again() -> None:
    assert image_url(ImageInput(data=RED)).startswith("data:image/png;base64,iVBOR")
    assert image_url(ImageInput(data=b"??")) == "data:application/octet-stream;base64,Pz8="
    assert image_url(ImageInput(url="https://x.test/a.png")) == "https://x.test/a.png"


# --- the size an image is shrunk to --------------------------------------------------------------------


def _processors() -> dict[str, Any]:
    from transformers import CLIPImageProcessorPil, Qwen2VLImageProcessorPil, SiglipImageProcessorPil

    return {
        "clip": CLIPImageProcessorPil(),  # shortest edge 224
        "siglip": SiglipImageProcessorPil(),  # 224 x 224
        "qwen2-vl": Qwen2VLImageProcessorPil(),  # at most 1003520 pixels
        "idefics3": SimpleNamespace(size={"longest_edge": 1456}, do_image_splitting=True),
        "llava-next": SimpleNamespace(
            size={"shortest_edge": 336}, image_grid_pinpoints=[[336, 672], [672, 672]]
        ),
        "mllama": SimpleNamespace(size={"height": 560, "width": 560}, max_image_tiles=4),
        "nothing": SimpleNamespace(),
    }


@pytest.mark.parametrize(
    ("size", "processor", "wanted"),
    [
        ((1000, 500), None, (1000, 500)),
        ((6000, 4000), None, (DEFAULT_MAX_SIDE, 1365)),
        ((4000, 6000), None, (1365, DEFAULT_MAX_SIDE)),
        ((1000, 500), "clip", (448, 224)),
        ((100, 50), "clip", (100, 50)),  # never enlarged
        ((1000, 500), "siglip", (448, 224)),  # covers 224 x 224
        ((4000, 3000), "qwen2-vl", (1157, 868)),
        ((3000, 1500), "idefics3", (1456, 728)),
        ((2000, 1000), "llava-next", (672, 336)),
        ((6000, 4000), "mllama", (DEFAULT_MAX_SIDE, 1365)),  # tiles: the default cap
        ((6000, 4000), "nothing", (DEFAULT_MAX_SIDE, 1365)),
    ],
)
def test_target_sizes(size: tuple[int, int], processor: str | None, wanted: tuple[int, int]) -> None:
    found = _processors()[processor] if processor else None
    assert target_size(*size, found) == wanted
    # A whole processor (a ProcessorMixin) is read through its image_processor.
    assert target_size(*size, SimpleNamespace(image_processor=found) if found else None) == wanted


# --- checking and decoding ------------------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A PNG that only says how large it is: Pillow reads the size from it without decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def gif_of_two_frames() -> bytes:
    frames = [Image.new("P", (8, 8), 1), Image.new("P", (8, 8), 2)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


@pytest.mark.anyio
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, at 89 megapixels
@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"this is no image", "is not an image"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "is not an image"),  # no Ghostscript
        (encoded(Image.new("RGB", (4, 4)), "PCX"), "is not an image"),  # a format not read
        (RED[: len(RED) // 2], "damaged or truncated"),
        (encoded(Image.new("RGB", (300, 300)), "JPEG")[:400], "damaged or truncated"),
        (png_header(10000, 10000), "10000x10000: more than 50,000,000 pixels"),
        (png_header(20000, 20000), "more than 50,000,000 pixels"),  # past Pillow's own bomb error
        (b"", "is empty"),
        (bytes(MAX_IMAGE_BYTES + 1), "larger than 20 MiB"),
    ],
)
async def test_bad_images_are_a_400_naming_the_part(data: bytes, words: str) -> None:
    images = [ImageInput(data=RED, where="messages[0].content[0]"), ImageInput(data=data, where="images[1]")]
    with pytest.raises(InvalidRequest, match=words) as caught:
        await load_images(images)
    assert (caught.value.status, caught.value.param) == (400, "images[1]")
    assert "'images[1]'" in caught.value.message


@pytest.mark.anyio
async def test_images_come_out_rgb_in_order() -> None:
    transparent = encoded(Image.new("RGBA", (10, 10), (0, 0, 0, 0)))
    grey = encoded(Image.new("L", (10, 10), 128))
    images = await load_images([ImageInput(data=d) for d in (RED, transparent, grey, gif_of_two_frames())])
    assert [i.mode for i in images] == ["RGB"] * 4
    assert images[0].getpixel((0, 0)) == (255, 0, 0)
    assert images[1].getpixel((0, 0)) == (255, 255, 255)  # transparency laid on white
    assert images[2].getpixel((0, 0)) == (128, 128, 128)
    assert images[3].getpixel((0, 0)) == (0, 255, 0)  # an animation's first frame (not the blue one)


@pytest.mark.anyio
async def test_a_large_photo_is_shrunk_to_the_processor_or_the_cap() -> None:
    from transformers import SiglipImageProcessorPil

    photo = encoded(Image.new("RGB", (6000, 4000), (0, 90, 200)), "JPEG", quality=80)
    (capped,) = await load_images([ImageInput(data=photo)])
    assert capped.size == (DEFAULT_MAX_SIDE, 1365)
    (for_siglip,) = await load_images([ImageInput(data=photo)], processor=SiglipImageProcessorPil())
    assert for_siglip.size == (336, 224)
    assert for_siglip.getpixel((10, 10))[2] > 150


@pytest.mark.anyio
async def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side: turned 90 degrees to show
    (image,) = await load_images([ImageInput(data=encoded(Image.new("RGB", (40, 20)), "JPEG", exif=exif))])
    assert image.size == (20, 40)


@pytest.mark.anyio
async def test_too_many_images_are_refused() -> None:
    with pytest.raises(InvalidRequest, match=f"{MAX_IMAGES} images at most") as caught:
        await load_images([ImageInput(data=RED, where=f"images[{i}]") for i in range(MAX_IMAGES + 1)])
    assert caught.value.param == f"images[{MAX_IMAGES}]"


@pytest.mark.anyio
async def test_a_photo_on_its_side_is_shrunk_then_turned() -> None:
    # Stored 3000x1000 with its top half red, shown turned 90 degrees clockwise: the red on the right.
    stored = Image.new("RGB", (3000, 1000), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 3000, 500))
    exif = Image.Exif()
    exif[0x0112] = 6
    photo = encoded(stored, "JPEG", exif=exif, quality=90)
    (capped,) = await load_images([ImageInput(data=photo)])
    assert capped.size == (683, 2048)  # the shown image's longest side, the cap
    assert capped.getpixel((600, 1024))[0] > 200 and capped.getpixel((60, 1024))[2] > 200
    (image,) = await load_images([ImageInput(data=photo)], processor=_processors()["clip"])
    assert image.size == (224, 672)  # the shown image's shortest side, 224
    assert image.getpixel((200, 336))[0] > 200 and image.getpixel((20, 336))[2] > 200


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["P", "LA", "RGBA", "I;16", "1", "CMYK"])
async def test_every_mode_is_shrunk_to_rgb(mode: str) -> None:
    """Modes resized as they are and modes converted first give the same picture."""
    image = Image.new("RGBA", (3000, 2000), (255, 0, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, 1500, 2000))  # the left half transparent (or black)
    kind = "JPEG" if mode == "CMYK" else "TIFF" if mode == "I;16" else "PNG"
    source = image.convert(mode) if mode not in ("P", "I;16", "1") else image.convert("RGB").convert(mode)
    if mode == "P":
        source.info["transparency"] = source.getpixel((0, 0))
    (shrunk,) = await load_images([ImageInput(data=encoded(source, kind))], processor=_processors()["clip"])
    assert shrunk.mode == "RGB" and shrunk.size == (336, 224)
    left, right = shrunk.getpixel((20, 112)), shrunk.getpixel((316, 112))
    transparent = mode in ("P", "LA", "RGBA")
    assert left == ((255, 255, 255) if transparent else (0, 0, 0)) or mode == "CMYK"
    assert right != left


@given(st.lists(st.integers(1, MAX_IMAGE_PIXELS), max_size=MAX_IMAGES))
def test_the_pixel_budget_names_the_first_image_past_it(pixels: list[int]) -> None:
    images = [ImageInput(data=RED, where=f"messages[0].content[{i}]") for i in range(len(pixels))]
    totals = [sum(pixels[: i + 1]) for i in range(len(pixels))]
    over = next((i for i, total in enumerate(totals) if total > MAX_REQUEST_PIXELS), None)
    if over is None:
        check_budget(images, pixels)
        return
    with pytest.raises(InvalidRequest, match=f"{totals[over]:,}") as caught:
        check_budget(images, pixels)
    assert (caught.value.status, caught.value.param) == (400, f"messages[0].content[{over}]")


@pytest.mark.anyio
async def test_a_request_past_its_pixel_budget_is_refused_from_the_headers() -> None:
    side = 7000  # 49 megapixels a header: four fit the budget, the fifth does not
    header = png_header(side, side)  # a header and no pixels: decoding it would fail
    images = [ImageInput(data=header, where=f"images[{i}]") for i in range(MAX_IMAGES)]
    with pytest.raises(InvalidRequest, match="pixels in all") as caught:
        await load_images(images)
    assert caught.value.param == f"images[{MAX_REQUEST_PIXELS // side**2}]"


# --- fetching, from a real server on 127.0.0.1 ------------------------------------------------------------


class ImageServer(http.server.BaseHTTPRequestHandler):
    hosts: list[str] = []  # noqa: RUF012 - the Host headers seen, for the test to read

    def do_GET(self) -> None:
        self.hosts.append(self.headers.get("Host", ""))
        path = self.path
        if path == "/cat.png":
            self._send(200, RED, "image/png")
        elif path.startswith("/redirect/"):  # /redirect/N: N hops, then the image
            hops = int(path.rsplit("/", 1)[1])
            self._redirect(f"/redirect/{hops - 1}" if hops > 1 else "/cat.png")
        elif path == "/to-file":
            self._redirect("file:///etc/passwd")
        elif path == "/to-nowhere":
            self._redirect("http://0.0.0.0/cat.png")
        elif path == "/huge-declared":
            self.send_response(200)
            self.send_header("Content-Length", str(MAX_IMAGE_BYTES + 1))
            self.end_headers()
        elif path == "/huge":  # no length: the body goes on until the client hangs up
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            piece = bytes(64 * 1024)
            try:
                for _ in range(MAX_IMAGE_BYTES // len(piece) + 64):
                    self.wfile.write(piece)
            except OSError:
                pass
        elif path == "/slow":  # a byte a few times a second: never a read timeout, never done
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(40):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
        elif path == "/text":
            self._send(200, b"<html>no image here</html>", "text/html")
        else:
            self._send(404, b"not found", "text/plain")

    def _send(self, status: int, body: bytes, media: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ImageServer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.anyio
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])  # localhost: a name resolving to loopback
async def test_loopback_is_refused_by_default(origin: str, host: str) -> None:
    url = f"http://{origin.replace('127.0.0.1', host)}/cat.png"
    before = len(ImageServer.hosts)
    with pytest.raises(InvalidRequest, match="a loopback address: refused") as caught:
        await load_images([ImageInput(url=url, where="messages[0].content[0]")])
    assert caught.value.param == "messages[0].content[0]"
    assert "--allow-private-image-urls" in caught.value.message
    assert len(ImageServer.hosts) == before  # refused before connecting


@pytest.mark.anyio
async def test_private_addresses_are_fetched_when_allowed(origin: str) -> None:
    port = origin.rsplit(":", 1)[1]
    urls = [f"http://{origin}/cat.png", f"http://localhost:{port}/redirect/3"]
    images = await load_images([ImageInput(url=u) for u in urls], allow_private=True)
    assert [i.size for i in images] == [(40, 30), (40, 30)]
    # The connection went to the checked address, with the name kept in Host.
    assert f"localhost:{port}" in ImageServer.hosts


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/missing.png", "answered HTTP 404"),
        ("/redirect/4", "redirects more than 3 times"),
        ("/to-file", "is not an http(s) URL"),
        ("/to-nowhere", "0.0.0.0, an unspecified address: refused"),  # every hop is checked
        ("/huge-declared", "larger than 20 MiB"),
        ("/huge", "larger than 20 MiB"),
        ("/text", "is not an image"),
    ],
)
async def test_fetch_failures_are_a_400_naming_the_part(origin: str, path: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await load_images(
            [ImageInput(url=f"http://{origin}{path}", where="input[0].content[2]")], allow_private=True
        )
    assert words in caught.value.message
    assert (caught.value.status, caught.value.param) == (400, "input[0].content[2]")


@pytest.mark.anyio
async def test_a_trickling_server_is_cut_off(origin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "TOTAL_TIMEOUT", 1.0)
    started = time.monotonic()
    with pytest.raises(InvalidRequest, match="took longer than 1 s"):
        await load_images([ImageInput(url=f"http://{origin}/slow", where="w")], allow_private=True)
    assert time.monotonic() - started < 3


@pytest.mark.anyio
async def test_an_unreachable_host_is_a_400() -> None:
    with pytest.raises(InvalidRequest, match=r"does not resolve|could not be fetched") as caught:
        await load_images([ImageInput(url="http://no-such-host.invalid/a.png", where="w")])
    assert caught.value.param == "w"


@pytest.mark.anyio
async def test_the_first_failure_in_order_is_reported(origin: str) -> None:
    images = [
        ImageInput(url=f"http://{origin}/cat.png", where="a"),
        ImageInput(url=f"http://{origin}/slow", where="b"),
        ImageInput(data=b"not an image", where="c"),
        ImageInput(url=f"http://{origin}/missing", where="d"),
    ]
    started = time.monotonic()
    with pytest.raises(InvalidRequest) as caught:
        await load_images(images, allow_private=True)
    # c fails at once and cancels the slow fetch; d fails too, after c in the request's order.
    assert caught.value.param in ("c", "d") and time.monotonic() - started < 3


# --- https: the connection goes to the checked address, TLS still checks the name ------------------------


@pytest.fixture(scope="module")
def tls_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ImageServer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], cert
    server.shutdown()
    server.server_close()


@pytest.mark.anyio
async def test_https_checks_the_certificate_against_the_name(
    tls_origin: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, cert = tls_origin
    trusting = fetch.image_client()
    trusting._transport = httpx.AsyncHTTPTransport(verify=ssl.create_default_context(cafile=str(cert)))
    monkeypatch.setattr(load, "image_client", lambda: trusting)
    (image,) = await load_images([ImageInput(url=f"https://localhost:{port}/cat.png")], allow_private=True)
    assert image.size == (40, 30)
    # The same server by its address: the certificate names localhost only, so it is refused.
    trusting = fetch.image_client()
    trusting._transport = httpx.AsyncHTTPTransport(verify=ssl.create_default_context(cafile=str(cert)))
    with pytest.raises(InvalidRequest, match="could not be fetched") as caught:
        await load_images(
            [ImageInput(url=f"https://127.0.0.1:{port}/cat.png", where="w")], allow_private=True
        )
    assert caught.value.param == "w"
