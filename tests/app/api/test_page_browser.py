"""The try-it page at / driven in a real headless Chromium (Debian's ``chromium``, via Playwright)
against the real uvicorn on 127.0.0.1: upload, boxes on the canvas, the detections list, the
slider, the comparison, an attention map with its colour scale, the setup help when nothing is
loaded, the API docs, screenshots, and not one request to anywhere but the server.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium chromium-driver``; scripts/test installs
it). Playwright's own browser download is never used. Screenshots go to the test's tmp_path, or to
``$ATTNZOO_SCREENSHOT_DIR`` when set (to look at them).
"""

from __future__ import annotations

import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qsl, urlsplit

import cv2
import httpx
import numpy as np
import pytest

from app.main import create_app
from model_zoo import ensure_demo_weights, load_registry
from model_zoo.visualize import class_color
from tests.app.conftest import MISSING_VARIANT, REFUSED_VARIANT, LiveServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGE_THRESHOLD = 0.3  # the slider's initial value
SCREENSHOT_NAME = "attnzoo-page.png"
LEGEND_VALUES = (0, 32, 64, 96, 128, 160, 192, 224, 255)  # the colour stops of the page's heat-map scale


@pytest.fixture()
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("ATTNZOO_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class OnlyLocal:
    """Routes a page's requests: to the server under test they go, anything else is aborted and noted."""

    def __init__(self, page, port: int) -> None:
        self.requests: list[str] = []
        self.outside: list[str] = []
        self.problems: list[str] = []
        self.port = port
        page.route("**/*", self._route)
        page.on("request", lambda request: self.requests.append(f"{request.method} {request.url}"))
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("console", lambda message: self.problems.append(message.text) if message.type == "error" else None)

    def _route(self, route) -> None:
        url = urlsplit(route.request.url)
        if url.hostname == "127.0.0.1" and url.port == self.port:
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        reason = (
            f"BROWSER TEST SKIPPED: {CHROMIUM} is missing, so the web page was NOT tested. "
            "Install Debian's chromium (apt-get install -y chromium chromium-driver; scripts/test does)."
        )
        warnings.warn(reason, stacklevel=1)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def canvas_pixel(page, variant: str, x: int, y: int) -> tuple[int, int, int]:
    rgba = page.evaluate(
        """([variant, x, y]) => Array.from(document.querySelector(`canvas[data-variant="${variant}"]`)
               .getContext("2d").getImageData(x, y, 1, 1).data)""",
        [variant, x, y],
    )
    return tuple(rgba[:3])


def page_point(canvas, x: float, y: float) -> dict[str, float]:
    """Original-image pixel (x, y) → position in the canvas element (inside its border, scaled)."""
    left, top, width = canvas.evaluate("(c) => [c.clientLeft, c.clientTop, c.clientWidth]")
    scale = width / int(canvas.get_attribute("width"))
    return {"x": left + x * scale, "y": top + y * scale}


def set_threshold(page, value: float) -> None:
    page.evaluate(
        """(value) => { const slider = document.getElementById("threshold");
                        slider.value = value; slider.dispatchEvent(new Event("input", { bubbles: true })); }""",
        str(value),
    )


def detection_texts(page, variant: str) -> tuple[str, list[str]]:
    """The summary (count) and the list items under ``variant``'s panel."""
    panel = page.locator(f'#results figure[data-variant="{variant}"] .detections')
    return panel.locator("summary").inner_text(), panel.locator("li").all_inner_texts()


def test_the_page_end_to_end(browser, live_server, make_scene, tmp_path, screenshots):
    image_path = tmp_path / "scene.png"
    cv2.imwrite(str(image_path), make_scene(320, 240, seed=0))
    expected = httpx.post(
        f"{live_server.base_url}/detect",
        params={"variant": "attn1111", "score_thr": 0.05},
        content=image_path.read_bytes(),
        headers={"Content-Type": "image/png"},
        timeout=120,
    ).json()["detections"]
    shown = [d for d in expected if d["score"] > PAGE_THRESHOLD]
    assert shown, "the synthetic weights should find something in the scene"

    page = browser.new_page(viewport={"width": 1100, "height": 900})
    network = OnlyLocal(page, live_server.port)
    requests, outside, problems = network.requests, network.outside, network.problems
    try:
        page.goto(f"{live_server.base_url}/")

        # the models table: every registry variant, published and measured side by side
        page.wait_for_selector('#models-table tbody tr[data-variant="attn0010-dcn"]')
        rows = {row.get_attribute("data-variant"): row.inner_text() for row in page.locator("#models-table tbody tr").all()}
        assert list(rows) == ["attn1111", "attn0010", "attn1111-dcn", "attn0010-dcn"]
        assert re.search(r"attn1111\s+1111\s+no\s+loaded\s+40\.0\s+—\s+13\.8\s+—\s+cpu", rows["attn1111"]), rows["attn1111"]
        assert "unavailable" in rows["attn0010-dcn"] and "42.0" in rows["attn0010-dcn"]

        # upload → boxes on the canvas, in their class colours, where the detections are
        page.select_option("#variant", "attn1111")
        page.set_input_files("#file", str(image_path))
        canvas = page.locator('canvas[data-variant="attn1111"]')
        canvas.wait_for()
        page.wait_for_function('() => document.querySelector("canvas[data-variant=attn1111]").dataset.boxes !== undefined')
        assert int(canvas.get_attribute("data-boxes")) == len(shown)
        best = shown[0]  # drawn last, on top
        x1, y1, x2, y2 = (round(v) for v in best["bbox"])
        blue, green, red = class_color(best["label"])
        assert canvas_pixel(page, "attn1111", x1, (y1 + y2) // 2) == (red, green, blue)
        assert canvas_pixel(page, "attn1111", (x1 + x2) // 2, y2) == (red, green, blue)

        # the detections drawn, counted and listed by descending score
        summary, items = detection_texts(page, "attn1111")
        assert summary == f"{len(shown)} detection{'s' if len(shown) != 1 else ''} with score > 0.30"
        assert items == [f"{d['class_name']} {d['score']:.2f}" for d in shown]
        assert not page.locator("#setup-help").is_visible()  # everything requested is loaded

        # hover: class and score of the innermost box under the pointer
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        canvas.hover(position=page_point(canvas, cx, cy))
        under = [d for d in shown if d["bbox"][0] <= cx <= d["bbox"][2] and d["bbox"][1] <= cy <= d["bbox"][3]]
        innermost = min(under, key=lambda d: (d["bbox"][2] - d["bbox"][0]) * (d["bbox"][3] - d["bbox"][1]))
        assert page.locator("#tooltip").inner_text() == f"{innermost['class_name']} {innermost['score']:.2f}"

        # the slider filters here: fewer boxes, no new request
        detect_calls = len([r for r in requests if "/detect?" in r])
        assert detect_calls == 1
        set_threshold(page, 0.95)
        threshold = float(page.input_value("#threshold"))
        assert threshold == 0.95 and shown[-1]["score"] < threshold
        assert int(canvas.get_attribute("data-boxes")) == len([d for d in expected if d["score"] > threshold]) < len(shown)
        assert len(detection_texts(page, "attn1111")[1]) == int(canvas.get_attribute("data-boxes"))
        assert detection_texts(page, "attn1111")[0].endswith("with score > 0.95")
        set_threshold(page, PAGE_THRESHOLD)
        assert int(canvas.get_attribute("data-boxes")) == len(shown)
        assert len([r for r in requests if "/detect?" in r]) == detect_calls

        # compare all: one panel per loaded variant, titled with published AP and latency; the
        # tooltip of the panel that went away goes with it
        assert page.locator("#tooltip").is_visible()
        page.select_option("#variant", "__compare__")
        page.wait_for_function('() => document.querySelectorAll("#results canvas[data-boxes]").length === 2')
        assert page.locator("#tooltip").is_hidden()
        captions = page.locator("#results figcaption").all_inner_texts()
        assert captions[0].startswith("attn1111") and "published AP 40.0" in captions[0]
        assert captions[1].startswith("attn0010") and "published AP 39.1" in captions[1]
        assert all(re.search(r"\d+ ms here$", caption) for caption in captions)
        assert all(int(c.get_attribute("data-boxes")) > 0 for c in page.locator("#results canvas").all())
        for variant in ("attn1111", "attn0010"):
            count = int(page.locator(f'canvas[data-variant="{variant}"]').get_attribute("data-boxes"))
            assert detection_texts(page, variant)[0].startswith(f"{count} detection") and len(detection_texts(page, variant)[1]) == count
        assert any("POST" in r and "/compare?" in r for r in requests)

        # click a point of the 1111 panel → its attention map (a heat map of the image's size)
        canvas = page.locator('canvas[data-variant="attn1111"]')
        canvas.click(position=page_point(canvas, 200, 120))
        heat_map = page.locator("#attention-image")
        heat_map.wait_for()
        page.wait_for_function('() => document.getElementById("attention-image").naturalWidth > 0')
        assert heat_map.evaluate("(img) => [img.naturalWidth, img.naturalHeight]") == [320, 240]
        caption = page.locator("#attention-caption").inner_text()
        assert caption.startswith("attn1111 (attention 1111), stage 3 block 0, mean over heads, query (")
        attention_calls = [r for r in requests if "/attention?" in r]
        assert len(attention_calls) == 1 and attention_calls[0].startswith("POST ")
        query = dict(parse_qsl(urlsplit(attention_calls[0].split(" ", 1)[1]).query))
        assert (query["variant"], query["stage"], query["block"], query["format"]) == ("attn1111", "3", "0", "image")
        assert abs(float(query["x"]) - 200) <= 1 and abs(float(query["y"]) - 120) <= 1  # pointer pixels are whole

        # the heat map's colour scale: OpenCV's JET, the colours the server draws with
        legend = page.locator("#attention-legend")
        assert legend.is_visible() and legend.bounding_box()["width"] > 100
        gradient = legend.evaluate("(bar) => getComputedStyle(bar).backgroundImage")
        stops = [tuple(map(int, rgb)) for rgb in re.findall(r"rgb\((\d+), (\d+), (\d+)\)", gradient)]
        jet = cv2.applyColorMap(np.array(LEGEND_VALUES, np.uint8).reshape(-1, 1), cv2.COLORMAP_JET)[:, 0, ::-1]
        assert stops == [tuple(int(c) for c in rgb) for rgb in jet]

        page.screenshot(path=str(screenshots / SCREENSHOT_NAME), full_page=True)
    finally:
        page.close()

    assert (screenshots / SCREENSHOT_NAME).stat().st_size > 10_000
    assert outside == [], f"the page asked for something outside 127.0.0.1: {outside}"
    assert all(urlsplit(r.split(" ", 1)[1]).hostname == "127.0.0.1" for r in requests)
    assert problems == []


@contextmanager
def page_of(browser, server: LiveServer) -> Iterator[tuple[object, OnlyLocal]]:
    """The service's page opened in a new tab (closed afterwards), and what it asked the network."""
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    network = OnlyLocal(page, server.port)
    try:
        page.goto(f"{server.base_url}/")
        yield page, network
    finally:
        page.close()


def test_the_page_says_where_to_put_missing_checkpoints(browser, broken_server, zoo, screenshots):
    with page_of(browser, broken_server) as (page, network):
        help_box = page.locator("#setup-help")
        help_box.wait_for(state="visible")
        assert page.locator("#setup-title").inner_text() == "No variant is loaded"
        hint = page.locator("#setup-hint").inner_text()
        missing_file = f"{MISSING_VARIANT}-12345678.pth"
        assert f"put {missing_file} into the weights dir (ATTNZOO_WEIGHTS_DIR" in hint
        assert "attnzoo serve --demo" in hint and "attnzoo fetch" in hint
        items = page.locator("#setup-files li").all_inner_texts()
        assert items[0] == f"{MISSING_VARIANT}: {missing_file}"
        assert items[1].startswith(f"{REFUSED_VARIANT}: ") and "sha256" in items[1]
        assert page.locator("#status").inner_text() == "No variant is loaded: see below what to do."
        page.screenshot(path=str(screenshots / "attnzoo-page-nothing-loaded.png"), full_page=True)
    assert network.outside == [] and network.problems == []


def test_the_page_says_when_it_serves_stand_in_weights(browser, zoo, tmp_path, make_scene, screenshots):
    weights = tmp_path / "weights"  # no official file: --demo serves the stand-in made here
    ensure_demo_weights(load_registry(zoo.metafile).resolve("attn0010"), weights)
    server = LiveServer(create_app(zoo.settings(weights_dir=weights, variants=["attn0010"], demo=True))).start()
    image_path = tmp_path / "scene.png"
    cv2.imwrite(str(image_path), make_scene(320, 240, seed=0))
    try:
        with page_of(browser, server) as (page, network):
            banner = page.locator("#demo-banner")
            banner.wait_for(state="visible")
            assert "synthetic stand-in weights" in banner.inner_text().lower()
            assert page.locator("#demo-variants").inner_text() == "attn0010"
            assert page.locator("#setup-help").is_hidden()
            # wherever a variant's figures are shown, its stand-in weights are marked
            page.wait_for_selector('#models-table tbody tr[data-variant="attn0010"]')
            assert page.locator('#models-table tbody tr[data-variant="attn0010"] td').first.inner_text() == "attn0010 (synthetic weights)"
            assert page.locator('#variant option[value="attn0010"]').inner_text() == "attn0010 (synthetic weights)"
            page.set_input_files("#file", str(image_path))
            page.locator('#results figure[data-variant="attn0010"] figcaption .stand-in').wait_for()
            caption = page.locator('#results figure[data-variant="attn0010"] figcaption').inner_text()
            assert caption.startswith("attn0010") and "synthetic weights" in caption and "published AP 39.1" in caption
            page.screenshot(path=str(screenshots / "attnzoo-page-demo.png"), full_page=True)
    finally:
        server.stop()
    assert network.outside == [] and network.problems == []


@pytest.mark.parametrize(
    ("path", "rendered"),
    [
        ("/docs", '.opblock-summary-path[data-path="/detect"]'),  # Swagger UI's operation row
        ("/redoc", 'h2:has-text("Detect objects in one image")'),  # ReDoc's operation heading
    ],
)
def test_the_api_docs_render_with_no_network(browser, live_server, screenshots, path, rendered):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    network = OnlyLocal(page, live_server.port)
    try:
        page.goto(f"{live_server.base_url}{path}")
        page.locator(rendered).first.wait_for(state="visible", timeout=30_000)
        page.screenshot(path=str(screenshots / f"attnzoo{path.replace('/', '-')}.png"))
    finally:
        page.close()
    assert network.outside == [], f"{path} asked for something outside 127.0.0.1: {network.outside}"
    assert any(request.endswith("/openapi.json") for request in network.requests)
    # ReDoc's "by Redocly" logo is on its CDN: the page's Content-Security-Policy refuses it
    refused_logo = [p for p in network.problems if "https://cdn.redoc.ly/redoc/logo-mini.svg" in p and "Content Security Policy" in p]
    assert [p for p in network.problems if p not in refused_logo] == []
    assert len(refused_logo) == (1 if path == "/redoc" else 0)
