"""The try-it page at / driven in a real headless Chromium (Debian's ``chromium``, via Playwright)
against the real uvicorn on 127.0.0.1: upload, boxes on the canvas, the slider, the comparison,
an attention map, a screenshot, and not one request to anywhere but the server.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium chromium-driver``; scripts/test installs
it). Playwright's own browser download is never used.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qsl, urlsplit

import cv2
import httpx
import pytest

from model_zoo.visualize import class_color

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


def test_the_page_end_to_end(browser, live_server, make_scene, tmp_path):
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

    requests: list[str] = []
    outside: list[str] = []
    problems: list[str] = []

    def only_local(route) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1" and urlsplit(url).port == live_server.port:
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.route("**/*", only_local)
    page.on("request", lambda request: requests.append(f"{request.method} {request.url}"))
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
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
        set_threshold(page, PAGE_THRESHOLD)
        assert int(canvas.get_attribute("data-boxes")) == len(shown)
        assert len([r for r in requests if "/detect?" in r]) == detect_calls

        # compare all: one panel per loaded variant, titled with published AP and latency
        page.select_option("#variant", "__compare__")
        page.wait_for_function('() => document.querySelectorAll("#results canvas[data-boxes]").length === 2')
        captions = page.locator("#results figcaption").all_inner_texts()
        assert captions[0].startswith("attn1111") and "published AP 40.0" in captions[0]
        assert captions[1].startswith("attn0010") and "published AP 39.1" in captions[1]
        assert all(re.search(r"\d+ ms here$", caption) for caption in captions)
        assert all(int(c.get_attribute("data-boxes")) > 0 for c in page.locator("#results canvas").all())
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

        page.screenshot(path=str(tmp_path / SCREENSHOT_NAME), full_page=True)
    finally:
        page.close()

    assert (tmp_path / SCREENSHOT_NAME).stat().st_size > 10_000
    assert outside == [], f"the page asked for something outside 127.0.0.1: {outside}"
    assert all(urlsplit(r.split(" ", 1)[1]).hostname == "127.0.0.1" for r in requests)
    assert problems == []
