#!/usr/bin/env python3
"""Browser test of `convnet serve` and `convnet train --serve`: a real
Chromium, driven by Selenium.

Training live (unless --checkpoint is given): it runs `convnet train --serve`
(SimpleConvNet, 12 epochs on the embedded digits, one thread: long
enough to watch) on 127.0.0.1 with a free
port, opens the page while it trains, and checks that:

- the training card shows the run in progress, and its loss curve is drawn
  and changes as batches arrive;
- the first layer's filters are drawn, and redrawn (changed) from a newer
  snapshot of the network;
- a digit drawn on the pad gets an answer, which is asked again of each
  newer snapshot;
- when training is over the page says so and uses the final network;
- Ctrl-C then stops the server (exit code 0).

It saves a screenshot taken during the run to docs/images/train-serve.png,
and the run's checkpoint serves for the rest.

Then it starts `convnet serve` on that checkpoint on 127.0.0.1 with a free
port, draws a 1, a 0 and a 7 on the page's canvas as mouse strokes, and
checks that:

- the page shows the right class for each;
- every layer's map canvas is drawn (not blank, more than two colours);
- clicking a unit of conv1 shows its arithmetic with the numbers the API
  gives for the same unit, and clicking a pooling unit shows the winner;
- the filters are drawn.

It saves a screenshot to docs/images/serve.png. With --latency-model deep it
also measures the stroke-to-maps time of that network (a `deep` checkpoint
with its initial weights: the time does not depend on them) and prints it.

Needs chromium and chromium-driver (Debian) and the selenium package;
.ci/browser-test.sh sets everything up. Nothing leaves 127.0.0.1.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Stroke paths in the 280×280 canvas's pixels, one list of points per stroke.
DIGITS = {
    "1": [[(150, 45), (146, 100), (142, 160), (140, 235)]],
    "0": [[(140 + 62 * __import__("math").sin(t / 24 * 6.2832),
            140 - 92 * __import__("math").cos(t / 24 * 6.2832)) for t in range(26)]],
    "7": [[(75, 60), (140, 58), (205, 60), (175, 120), (150, 175), (130, 235)]],
}


def start_server(binary, checkpoint):
    process = subprocess.Popen(
        [binary, "serve", "--port", "0", "--checkpoint", checkpoint],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    url = next((w for w in line.split() if w.startswith("http://")), None)
    if url is None:
        process.kill()
        sys.exit(f"convnet serve printed no URL: {line!r}")
    return process, url


def post(url, path, body):
    request = urllib.request.Request(
        url.rstrip("/") + path,
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def browser(width=1600, height=1000):
    options = Options()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", f"--window-size={width},{height}", "--force-device-scale-factor=1",
                "--proxy-server=direct://", "--proxy-bypass-list=*"]:
        options.add_argument(arg)
    service = Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=options)


def idle(driver):
    """Waits until the page has no request in flight or pending."""
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "return window.convnet.forward !== null && !window.convnet.inFlight && !window.convnet.pending"))
    time.sleep(0.1)


def draw(driver, strokes, step=8):
    canvas = driver.find_element(By.ID, "draw")
    size = canvas.size
    for stroke in strokes:
        # Points on the path every `step` pixels, as offsets from the centre.
        points = []
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
            n = max(1, int(max(abs(x1 - x0), abs(y1 - y0)) / step))
            points += [(x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n) for i in range(n)]
        points.append(stroke[-1])
        to_offset = lambda p: (int(p[0] * size["width"] / 280 - size["width"] / 2),
                               int(p[1] * size["height"] / 280 - size["height"] / 2))
        actions = ActionChains(driver, duration=10)
        ox, oy = to_offset(points[0])
        actions.move_to_element_with_offset(canvas, ox, oy).click_and_hold()
        last = (ox, oy)
        for p in points[1:]:
            o = to_offset(p)
            actions.move_by_offset(o[0] - last[0], o[1] - last[1])
            last = o
        actions.release().perform()
    idle(driver)


def clear(driver):
    driver.find_element(By.ID, "clear").click()
    idle(driver)


def check_maps_drawn(driver):
    """Every layer card's canvas has more than two colours besides the gaps."""
    counts = driver.execute_script("""
        return [...document.querySelectorAll('canvas.maps')].map(c => {
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          const seen = new Set();
          for (let i = 0; i < d.length && seen.size < 10; i += 4) {
            if (d[i] === 225 && d[i + 1] === 228 && d[i + 2] === 233) continue;
            seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
          }
          return [c.dataset.layer, c.width, c.height, seen.size];
        });""")
    assert len(counts) >= 2, counts
    for layer, w, h, colours in counts:
        assert w > 0 and h > 0 and colours > 2, f"layer {layer}'s maps look blank: {counts}"
    return len(counts)


def canvas_colours(driver, element_id):
    """The number of different colours on a canvas (up to 50)."""
    return driver.execute_script("""
        const c = document.getElementById(arguments[0]);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const seen = new Set();
        for (let i = 0; i < d.length && seen.size < 50; i += 4) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
        return seen.size;""", element_id)


def canvas_picture(driver, selector):
    """A canvas's pixels as a data URL, to compare two moments."""
    return driver.execute_script("const c = document.querySelector(arguments[0]); return c ? c.toDataURL() : null",
                                 selector)


# The training live run: long enough for the page to watch it.
LIVE_EPOCHS = 12


def live_training(binary, folder, screenshot, failures):
    """`convnet train --serve` seen from the page; returns the checkpoint."""
    # The browser first: the page then opens as soon as the URL is known,
    # early in the run.
    driver = browser()
    checkpoint = os.path.join(folder, "simple.safetensors")
    print(f"training SimpleConvNet for {LIVE_EPOCHS} epochs with --serve ...", flush=True)
    process = subprocess.Popen(
        [binary, "train", "--serve", "--port", "0", "--epochs", str(LIVE_EPOCHS), "--threads", "1",
         "--save", checkpoint],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    url = next((w for w in line.split() if w.startswith("http://")), None)
    live = "window.convnet.live"
    try:
        if url is None:
            sys.exit(f"convnet train --serve printed no URL: {line!r}")
        driver.get(url)
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(
            f"return window.convnet && window.convnet.model !== null && {live}.start !== null && {live}.batches.length > 0"))
        if not driver.find_element(By.ID, "training").is_displayed():
            failures.append("the training card is not shown")
        state = driver.find_element(By.ID, "training-status").get_attribute("data-state")
        if state != "training":
            failures.append(f"the page opened after the run ended ({state}): nothing live to see")

        # The drawing pad answers during training.
        draw(driver, DIGITS["1"])
        shown = driver.find_element(By.ID, "prediction").get_attribute("data-class")
        version = driver.execute_script("return window.convnet.forward.version")
        if shown not in [str(d) for d in range(10)]:
            failures.append(f"no answer during training: {shown!r}")
        print(f"during training, snapshot {version}: a drawn 1 is read as {shown}")

        # The loss curve is drawn, and changes as more batches come.
        before = driver.execute_script(f"return {live}.batches.length")
        curve = canvas_picture(driver, "#loss-curve")
        colours = canvas_colours(driver, "loss-curve")
        if colours < 4:
            failures.append(f"the loss curve looks blank ({colours} colours)")
        filters = canvas_picture(driver, "#live-filters .filter-layer > canvas")
        filters_version = driver.execute_script("return window.convnet.filtersVersion")
        if filters is None:
            failures.append("the first layer's filters are not drawn")
        WebDriverWait(driver, 120).until(lambda d: d.execute_script(
            f"return {live}.done !== null || ({live}.batches.length >= arguments[0] + 5"
            f" && {live}.snapshot !== null && {live}.snapshot.version > arguments[1])", before, version))
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(
            "return window.convnet.filtersVersion > arguments[0] && window.convnet.forward.version > arguments[1]",
            filters_version, version))
        time.sleep(0.2)
        after = driver.execute_script(f"return {live}.batches.length")
        if canvas_picture(driver, "#loss-curve") == curve:
            failures.append(f"the loss curve did not change from {before} to {after} batches")
        if canvas_picture(driver, "#live-filters .filter-layer > canvas") == filters:
            failures.append("the filters did not change with a newer snapshot")
        if canvas_colours(driver, "acc-curve") < 2:
            failures.append("the accuracy chart is blank")
        newer = driver.execute_script("return window.convnet.forward.version")
        print(f"loss curve redrawn from {before} to {after} batches; filters and the answer from snapshot {newer}")

        # The screenshot: during the run (after half of its epochs if the
        # page sees them before the end), with a conv1 unit's arithmetic.
        WebDriverWait(driver, 300).until(lambda d: d.execute_script(
            f"return {live}.epochs.length >= {LIVE_EPOCHS // 2} || {live}.done !== null"))
        click_unit(driver, 0, 4, 4, 10)
        driver.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.3)
        os.makedirs(os.path.dirname(screenshot), exist_ok=True)
        driver.save_screenshot(screenshot)
        print(f"wrote {screenshot}")

        # The end: the page says so and answers with the final network.
        WebDriverWait(driver, 600).until(lambda d: d.execute_script(f"return {live}.done !== null"))
        final = driver.execute_script(f"return {live}.snapshot.version")
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(
            "return window.convnet.forward.version === arguments[0] && !window.convnet.inFlight", final))
        state = driver.find_element(By.ID, "training-status").get_attribute("data-state")
        text = driver.find_element(By.ID, "training-status").text
        if state != "finished" or "final network" not in text:
            failures.append(f"after training the page says {state}: {text!r}")
        shown = driver.find_element(By.ID, "prediction").get_attribute("data-class")
        epochs = driver.execute_script(f"return {live}.epochs.map(e => e.test_acc)")
        print(f"training over ({text}); test accuracy per epoch {epochs}; the 1 is read as {shown}")
    finally:
        driver.quit()
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
    if code != 0:
        failures.append(f"convnet train --serve ended with {code} after Ctrl-C")
    return checkpoint


def click_unit(driver, layer, channel, y, x):
    """Clicks unit (channel, y, x) of layer `layer`'s maps: a real pointer
    click (WebDriver actions) at the unit's pixel, then checks that the
    page shows that unit."""
    canvas = driver.execute_script("""
        const canvas = window.convnet.layerViews[arguments[0] + 1].canvas;
        canvas.scrollIntoView({block: 'center'});
        return canvas;""", layer)
    # The unit's centre as an offset from the canvas's centre, in CSS
    # pixels (where WebDriver's actions start).
    dx, dy = driver.execute_script("""
        const [layer, channel, y, x] = arguments;
        const view = window.convnet.layerViews[layer + 1];
        const canvas = view.canvas;
        const cx = ((channel % view.cols) * (view.w + view.gap) + x + 0.5) * view.px;
        const cy = (Math.floor(channel / view.cols) * (view.h + view.gap) + y + 0.5) * view.px;
        const r = canvas.getBoundingClientRect();
        return [cx * r.width / canvas.width - r.width / 2, cy * r.height / canvas.height - r.height / 2];
        """, layer, channel, y, x)
    ActionChains(driver, duration=10).move_to_element_with_offset(canvas, round(dx), round(dy)).click().perform()
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "unit").get_attribute("data-layer") == str(layer)
                                    and d.find_element(By.ID, "unit").get_attribute("data-channel") == str(channel))
    time.sleep(0.2)
    card = driver.find_element(By.ID, "unit")
    shown = {k: int(card.get_attribute(f"data-{k}")) for k in ["layer", "channel", "y", "x"]}
    wanted = {"layer": layer, "channel": channel, "y": y, "x": x}
    assert shown == wanted, f"clicked {wanted}, the page shows {shown}"
    return shown


def value(driver, element_id):
    return float(driver.find_element(By.ID, element_id).get_attribute("data-value"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "convnet"))
    parser.add_argument("--checkpoint", help="a trained digit checkpoint (default: train one, 12 epochs, "
                        "with the training live test)")
    parser.add_argument("--screenshot", default=os.path.join(ROOT, "docs", "images", "serve.png"))
    parser.add_argument("--live-screenshot", default=os.path.join(ROOT, "docs", "images", "train-serve.png"))
    parser.add_argument("--latency-model", help="also measure stroke-to-maps latency for this --model (e.g. deep)")
    args = parser.parse_args()

    temp = tempfile.TemporaryDirectory(prefix="convnet-browser-")
    failures = []
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = live_training(args.binary, temp.name, args.live_screenshot, failures)

    server, url = start_server(args.binary, checkpoint)
    driver = browser()
    try:
        driver.get(url)
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return window.convnet && window.convnet.model !== null"))
        idle(driver)
        # The samples and filters arrive.
        WebDriverWait(driver, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#samples .sample")) > 0)
        WebDriverWait(driver, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#filters canvas")) > 0)
        wrong = driver.find_elements(By.CSS_SELECTOR, "#samples .sample.wrong")
        print(f"samples: {len(driver.find_elements(By.CSS_SELECTOR, '#samples .sample'))}, wrong ones: {len(wrong)}")

        for digit in ["1", "0", "7"]:
            clear(driver)
            draw(driver, DIGITS[digit])
            shown = driver.find_element(By.ID, "prediction").get_attribute("data-class")
            probabilities = driver.execute_script("return window.convnet.forward.probabilities")
            print(f"drew a {digit}: the page says {shown} ({100 * max(probabilities):.1f}%)")
            if shown != digit:
                failures.append(f"drew a {digit}, the page says {shown}")
            cards = check_maps_drawn(driver)
        print(f"every layer's maps drawn ({cards} cards)")

        # The 7 is on the canvas: click a conv1 unit in the middle of it.
        image = driver.execute_script("return window.convnet.input")
        unit = click_unit(driver, 0, 3, 10, 10)
        expected = post(url, "/api/unit", {"image": image, **unit})
        for key in ["sum", "bias", "total"]:
            shown = value(driver, f"unit-{key}")
            if shown != expected[key]:
                failures.append(f"unit {unit}: the page shows {key} {shown}, the API {expected[key]}")
        relu = value(driver, "unit-relu")
        if relu != expected["relu"]["output"]:
            failures.append(f"unit {unit}: ReLU {relu} vs {expected['relu']['output']}")
        text = driver.find_element(By.ID, "unit-body").text
        assert "Σ products" in text and "bias" in text and "max(0," in text, text
        print(f"conv1 unit {unit}: sum {expected['sum']:.4f} + bias {expected['bias']:.4f} = {expected['total']:.4f}, as the API says")

        # A pooling unit shows the window's winner.
        model = driver.execute_script("return window.convnet.model")
        pools = [l for l in model["layers"] if l["kind"] == "MaxPooling"]
        if pools:
            layer = pools[0]
            c, h, w = layer["shape"]
            unit = click_unit(driver, layer["index"], min(3, c - 1), h // 2, w // 2)
            expected = post(url, "/api/unit", {"image": image, **unit})
            winner = value(driver, "unit-winner")
            if winner != expected["winner"]["value"]:
                failures.append(f"pool unit {unit}: winner {winner} vs {expected['winner']['value']}")
            print(f"{layer['name']} unit {unit}: winner {winner:.4f}")

        # The screenshot: the 7, its maps and a conv1 unit's arithmetic.
        click_unit(driver, 0, 4, 4, 10)
        driver.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.3)
        os.makedirs(os.path.dirname(args.screenshot), exist_ok=True)
        driver.save_screenshot(args.screenshot)
        print(f"wrote {args.screenshot}")
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=10)

    if args.latency_model:
        measure_latency(args.binary, args.latency_model, temp.name)

    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("browser test passed")


def measure_latency(binary, model, folder):
    """Stroke-to-maps milliseconds while drawing, for `model`."""
    checkpoint = os.path.join(folder, f"{model}.safetensors")
    subprocess.run([binary, "train", "--model", model, "--epochs", "0", "--save", checkpoint],
                   check=True, stdout=subprocess.DEVNULL)
    server, url = start_server(binary, checkpoint)
    driver = browser()
    try:
        driver.get(url)
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return window.convnet && window.convnet.model !== null"))
        idle(driver)
        driver.execute_script("window.convnet.latencies = []")
        for digit in ["7", "0", "1", "7", "0"]:
            clear(driver)
            draw(driver, DIGITS[digit], step=12)
        times = driver.execute_script("return window.convnet.latencies")
        server_ms = driver.execute_script("return window.convnet.forward.server_ms")
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=10)
    times.sort()
    print(f"{model}: stroke-to-maps latency over {len(times)} updates: median {statistics.median(times):.1f} ms, "
          f"90th percentile {times[int(0.9 * (len(times) - 1))]:.1f} ms (last server time {server_ms:.1f} ms)")


if __name__ == "__main__":
    main()
