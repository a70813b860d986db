#!/usr/bin/python3
"""Drives the studio page in a real headless Chromium (Selenium + chromedriver) against a
running `wgsd studio` and checks what a person would see: a typed prompt generates with
progress events and a live preview, the image lands in the gallery, survives a reload,
puts its parameters back in the form when clicked and downloads; a dropped PNG fills the
form; a long job cancels; a job of three images fills results and history; a bad size
shows the server's 400 message in words; an image dropped on the image panel runs
img2img, and a mask painted on it inpaints (the unmasked part stays close to the image).

Run by tests/studio_browser.rs; by hand:
    /usr/bin/python3 tests/browser/studio.py --url http://127.0.0.1:7860/ --screenshot-dir /tmp/shots
Exit status 0 when every check passed; otherwise 1 with what failed (plus failure.png).
"""
import argparse
import base64
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

PROMPT = "a red circle on a white background"
NEGATIVE = "blurry"
SEED = 1234


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)
    print(f"ok: {what}", flush=True)


def start_browser():
    opts = webdriver.ChromeOptions()
    for binary in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"):
        if os.path.exists(binary):
            opts.binary_location = binary
            break
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,1100", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(driver_path), options=opts)


class Page:
    """The studio page in the browser, by the element ids web/index.html gives."""

    def __init__(self, driver, url, timeout):
        self.d = driver
        self.url = url
        self.timeout = timeout

    def el(self, id_):
        return self.d.find_element(By.ID, id_)

    def wait(self, cond, what, timeout=None):
        try:
            return WebDriverWait(self.d, timeout or self.timeout, poll_frequency=0.05).until(lambda d: cond())
        except TimeoutException:
            raise CheckFailed(f"timed out waiting for: {what}") from None

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def open(self):
        self.d.get(self.url)
        self.wait(lambda: self.js("return document.body.dataset.ready === 'true'"), "the page to load its options")

    def set(self, id_, value):
        """Sets a field as typing would (input + change events, so the page saves it)."""
        self.js("const e = document.getElementById(arguments[0]); e.value = arguments[1];"
                "e.dispatchEvent(new Event('input', {bubbles: true}));"
                "e.dispatchEvent(new Event('change', {bubbles: true}));", id_, str(value))

    def value(self, id_):
        return self.el(id_).get_attribute("value")

    def progress(self):
        return self.js("const p = document.getElementById('progress');"
                       "return {state: p.dataset.state, events: Number(p.dataset.events || 0), job: p.dataset.job || null,"
                       " text: document.getElementById('progress-text').textContent,"
                       " previews: Number(document.getElementById('preview').dataset.updates || 0)};")

    def thumbs(self, box):
        return self.js("return Array.from(document.querySelectorAll('#' + arguments[0] + ' .thumb'))"
                       ".map(t => t.dataset.name);", box)

    def error_text(self):
        err = self.el("error")
        return self.el("error-text").text if err.is_displayed() else None

    def shot(self, path):
        if path:
            self.d.save_screenshot(path)
            print(f"screenshot: {path}", flush=True)


def http(url, method="GET", body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def fill_small_job(page, steps):
    page.set("prompt", "")
    page.el("prompt").send_keys(PROMPT)
    page.set("negative-prompt", NEGATIVE)
    page.set("steps", steps)
    page.set("guidance", "7.5")
    page.set("width", 64)
    page.set("height", 64)
    page.set("num-images", 1)
    page.set("seed", SEED)


def error_in_words(page, base, shots):
    """A width that is not a multiple of 8: the server's own 400 message shows in the page."""
    page.set("prompt", PROMPT)
    page.set("width", 100)
    page.set("height", 64)
    page.set("steps", 4)
    page.el("generate").click()
    page.wait(lambda: page.error_text(), "an error message in the page")
    shown = page.error_text()
    status, _, raw = http(base + "api/v1/jobs", "POST",
                          json.dumps({"prompt": PROMPT, "width": 100, "height": 64, "num_inference_steps": 4}).encode(),
                          {"Content-Type": "application/json"})
    check(status == 400, f"the server answers 400 to width 100 (got {status})")
    message = json.loads(raw)["message"]
    check(message in shown, f"the page shows the server's words: {shown!r}")
    check(page.progress()["state"] != "running", "no job started")
    page.shot(shots and os.path.join(shots, "studio-error.png"))
    page.el("error-close").click()
    check(not page.el("error").is_displayed(), "the error can be dismissed")


def generate_and_history(page, base, shots):
    """Ctrl+Enter generates: progress, preview, image in results and gallery, parameters."""
    before = page.thumbs("gallery")
    fill_small_job(page, 8)
    page.el("prompt").send_keys(Keys.CONTROL, Keys.ENTER)
    page.wait(lambda: page.progress()["events"] >= 1, "a progress event")
    page.wait(lambda: page.progress()["state"] in ("done", "failed", "cancelled"), "the job to end")
    prog = page.progress()
    check(prog["state"] == "done", f"the job is done ({prog['text']!r}, error: {page.error_text()!r})")
    check(prog["events"] >= 1, f"{prog['events']} progress events reached the page")
    check(prog["previews"] >= 1, f"the live preview updated {prog['previews']} times")
    results = page.thumbs("results")
    check(len(results) == 1, f"one image in the results: {results}")
    name = results[0]
    check(name.endswith(f"-{SEED}.png"), f"the image is named after its seed: {name}")
    page.wait(lambda: name in page.thumbs("gallery"), f"{name} in the gallery")
    check(page.thumbs("gallery")[0] == name, "the gallery is newest first")
    check(len(page.thumbs("gallery")) == len(before) + 1, "the gallery grew by one")
    page.wait(lambda: page.js("const i = document.getElementById('viewer-image');"
                              "return i.complete && i.naturalWidth === 64 && !i.hidden;"), "the 64x64 image in the viewer")
    page.wait(lambda: PROMPT in page.el("image-params").text, "the image's parameters shown")
    params = page.el("image-params").text
    check(f"Seed: {SEED}" in params and "Steps: 8" in params, f"parameters name seed and steps: {params!r}")
    page.shot(shots and os.path.join(shots, "studio.png"))
    return name


def click_puts_params_back(page, base, name):
    """Clicking a gallery image puts its parameters back in the form; download works."""
    page.set("prompt", "something else")
    page.set("seed", -1)
    page.set("steps", 30)
    page.d.find_element(By.CSS_SELECTOR, f'#gallery .thumb[data-name="{name}"]').click()
    page.wait(lambda: page.value("prompt") == PROMPT, "the prompt back in the form")
    check(page.value("seed") == str(SEED), f"the seed back in the form ({page.value('seed')})")
    check(page.value("steps") == "8", f"the steps back in the form ({page.value('steps')})")
    check(page.value("negative-prompt") == NEGATIVE, "the negative prompt back in the form")
    href = page.el("download").get_attribute("href")
    check("download=1" in href, f"the download link asks for an attachment: {href}")
    status, headers, raw = http(href)
    disposition = {k.lower(): v for k, v in headers.items()}.get("content-disposition", "")
    check(status == 200 and raw[:8] == b"\x89PNG\r\n\x1a\n", "the download is a PNG")
    check("attachment" in disposition, f"the download is an attachment: {disposition!r}")


def reload_keeps_history(page, name):
    """History comes from the outputs folder and the form from localStorage."""
    page.set("prompt", PROMPT + ", remembered")
    page.open()
    page.wait(lambda: name in page.thumbs("gallery"), f"{name} in the history after a reload")
    check(page.value("prompt") == PROMPT + ", remembered", "the form survives a reload (localStorage)")


def drop_png(page, base, name):
    """A PNG dropped on the page fills the form from its parameters (POST /api/v1/png-info)."""
    status, _, raw = http(base + "api/v1/images/" + name)
    check(status == 200, f"GET the image {name}")
    page.set("prompt", "")
    page.set("seed", -1)
    page.js("""
        const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], arguments[1], {type: 'image/png'}));
        for (const type of ['dragenter', 'dragover', 'drop']) {
          document.body.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: dt}));
        }""", base64.b64encode(raw).decode(), name)
    page.wait(lambda: page.value("prompt") == PROMPT, "the dropped PNG's prompt in the form")
    check(page.value("seed") == str(SEED), "the dropped PNG's seed in the form")
    check(page.el("notice").is_displayed() and name in page.el("notice").text, "the page says where the parameters came from")
    check(not page.el("drop-overlay").is_displayed(), "the drop overlay is gone")


def cancel_long_job(page, base, shots):
    """A long job shows progress and a preview, and Cancel stops it without writing an image."""
    total_before = json.loads(http(base + "api/v1/history?limit=1")[2])["total"]
    fill_small_job(page, 500)
    page.set("width", 256)
    page.set("height", 256)
    page.set("seed", -1)
    page.el("generate").click()
    page.wait(lambda: page.progress()["events"] >= 2, "progress on the long job", timeout=300)
    page.wait(lambda: page.js("const p = document.getElementById('preview');"
                              "return !p.hidden && p.complete && p.naturalWidth > 0;"), "a preview on screen")
    prog = page.progress()
    check(prog["state"] == "running" and "Step" in prog["text"], f"progress text while running: {prog['text']!r}")
    check("ETA" in prog["text"], "the progress text has an ETA")
    check(page.el("generate").get_attribute("disabled") is not None, "Generate is disabled while a job runs")
    page.shot(shots and os.path.join(shots, "studio-generating.png"))
    page.el("cancel").click()
    page.wait(lambda: page.progress()["state"] == "cancelled", "the job to be cancelled", timeout=120)
    job = json.loads(http(base + "api/v1/jobs/" + prog["job"])[2])
    check(job["status"] == "cancelled" and job["step"] < 500, f"the server says cancelled at step {job['step']}")
    check(job["params"].get("prompt_syntax") == "a1111", f"the page sends A1111's prompt syntax: {job['params']}")
    total_after = json.loads(http(base + "api/v1/history?limit=1")[2])["total"]
    check(total_after == total_before, "a cancelled job writes no image")
    check(page.el("generate").get_attribute("disabled") is None, "Generate is enabled again")


def several_images(page, shots):
    """One job with three images: all three in the results and the history (the README's
    screenshot is this finished page)."""
    before = page.thumbs("gallery")
    fill_small_job(page, 10)
    page.set("prompt", "a blue square on a gray background")
    page.set("negative-prompt", "")
    page.set("num-images", 3)
    page.set("seed", 42)
    page.el("generate").click()
    page.wait(lambda: page.progress()["state"] in ("done", "failed", "cancelled"), "the three-image job to end")
    check(page.progress()["state"] == "done", f"the three-image job is done ({page.progress()['text']!r})")
    results = page.thumbs("results")
    check(len(results) == 3, f"three images in the results: {results}")
    page.wait(lambda: sorted(page.thumbs("gallery")[:3]) == sorted(results), "the three images first in the history")
    check(len(page.thumbs("gallery")) == len(before) + 3, "the history grew by three")
    page.wait(lambda: page.js("const i = document.getElementById('viewer-image');"
                              "return i.complete && i.naturalWidth === 64 && !i.hidden;"), "the first image in the viewer")
    page.shot(shots and os.path.join(shots, "studio.png"))


PIXELS_JS = """
const done = arguments[arguments.length - 1];
async function px(url) {
  const i = new Image();
  i.src = url;
  await i.decode();
  const c = document.createElement('canvas');
  c.width = i.naturalWidth; c.height = i.naturalHeight;
  const g = c.getContext('2d');
  g.drawImage(i, 0, 0);
  return { w: c.width, data: g.getImageData(0, 0, c.width, c.height).data };
}
// Mean absolute difference (0..255) of two images over columns [x0, x1).
function diff(a, b, x0, x1) {
  let sum = 0, n = 0;
  for (let i = 0; i < a.data.length; i += 4) {
    const x = (i / 4) % a.w;
    if (x < x0 || x >= x1) continue;
    for (let c = 0; c < 3; c++) { sum += Math.abs(a.data[i + c] - b.data[i + c]); n++; }
  }
  return n ? sum / n : -1;
}
Promise.all(arguments[0].map(px)).then((imgs) => {
  const [a, b] = imgs;
  done({ w: a.w, bw: b.w, all: diff(a, b, 0, a.w), left: diff(a, b, 10, 22), right: diff(a, b, 44, a.w) });
}).catch((e) => done({ error: String(e) }));
"""


def run_job(page, what):
    page.el("generate").click()
    page.wait(lambda: page.progress()["state"] in ("done", "failed", "cancelled"), f"the {what} job to end")
    prog = page.progress()
    check(prog["state"] == "done", f"the {what} job is done ({prog['text']!r}, error: {page.error_text()!r})")
    results = page.thumbs("results")
    check(len(results) == 1, f"one {what} image in the results: {results}")
    return prog["job"], results[0]


def hires_fix(page, shots):
    """The hires fix: a 64x64 first pass, then the second pass at 1.5x: a 96x96 image whose
    parameters carry the hires fields; switched off again for the jobs after it."""
    fill_small_job(page, 6)
    page.set("hires", "on")
    page.set("hires-scale", "1.5")
    page.set("hires-upscaler", "Latent")
    page.set("hires-strength", "0.6")
    page.set("hires-steps", "4")
    _, name = run_job(page, "hires fix")
    page.wait(lambda: page.js("const i = document.getElementById('viewer-image');"
                              "return i.complete && i.naturalWidth === 96 && i.naturalHeight === 96 && !i.hidden;"),
              "the 96x96 hires image in the viewer")
    page.wait(lambda: "Hires upscale: 1.5" in page.el("image-params").text, "the hires fields in the parameters")
    params = page.el("image-params").text
    check("Hires upscaler: Latent" in params and "Denoising strength: 0.6" in params,
          f"the parameters name the upscaler and strength: {params!r}")
    page.shot(shots and os.path.join(shots, "studio-hires.png"))
    page.set("hires", "off")
    return name


def img2img_and_mask(page, base, txt2img_name, shots):
    """An image dropped on the image panel runs img2img; a mask painted on it inpaints,
    and the part left unpainted stays close to the image."""
    status, _, raw = http(base + "api/v1/images/" + txt2img_name)
    check(status == 200, f"GET the image {txt2img_name}")
    fill_small_job(page, 10)
    page.js("""
        const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], 'init.png', {type: 'image/png'}));
        const panel = document.getElementById('image-panel');
        for (const type of ['dragenter', 'dragover', 'drop']) {
          panel.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: dt}));
        }""", base64.b64encode(raw).decode())
    page.wait(lambda: page.js("return document.getElementById('image-panel').dataset.mode") == "img2img",
              "the dropped image as the init image")
    check(page.el("init-preview").is_displayed(), "the init image shows in the panel")
    check(page.value("width") == "64" and page.value("height") == "64", "the size follows the image")
    check(page.value("prompt") == PROMPT, "a drop on the image panel does not read PNG parameters")
    page.set("strength", "0.6")
    job, i2i = run_job(page, "img2img")
    params = json.loads(http(base + "api/v1/jobs/" + job)[2])["params"]
    check(params.get("init_image") is True and params.get("strength") == 0.6 and params.get("mask") is False,
          f"the server ran img2img at strength 0.6: {params}")
    d = page.d.execute_async_script(PIXELS_JS, [base + "api/v1/images/" + i2i, base + "api/v1/images/" + txt2img_name])
    check(d.get("all", 0) > 0, f"img2img differs from the txt2img image it started from: {d}")

    # Paint a thick vertical stroke on the left quarter of the image.
    page.set("mask-size", 48)
    canvas = page.el("mask-canvas")
    # Pointer actions do not scroll: bring the whole canvas on screen first.
    page.js("arguments[0].scrollIntoView({block: 'center'});", canvas)
    rect = page.js("const r = arguments[0].getBoundingClientRect(); return {w: r.width, h: r.height};", canvas)
    x = -rect["w"] / 4  # offsets are from the canvas centre
    ActionChains(page.d).move_to_element_with_offset(canvas, x, -rect["h"] * 0.45).click_and_hold() \
        .move_by_offset(0, rect["h"] * 0.3).move_by_offset(0, rect["h"] * 0.3) \
        .move_by_offset(0, rect["h"] * 0.29).release().perform()
    page.wait(lambda: page.js("return document.getElementById('image-panel').dataset.mode") == "inpaint",
              "the painted mask turns the job into inpainting")
    page.shot(shots and os.path.join(shots, "studio-mask.png"))
    page.set("strength", "1")
    # Another scene than the image's, so the repainted part visibly changes. DDIM: with
    # this tiny model, Euler's repaint shifts the whole decoded image (diffusers' own
    # pipeline gives the same image; the latents outside the mask are the image's).
    page.set("prompt", "a blue square on a gray background")
    page.set("scheduler", "ddim")
    job, inp = run_job(page, "inpainting")
    params = json.loads(http(base + "api/v1/jobs/" + job)[2])["params"]
    check(params.get("mask") is True and params.get("strength") == 1.0, f"the server ran inpainting: {params}")
    d = page.d.execute_async_script(PIXELS_JS, [base + "api/v1/images/" + inp, base + "api/v1/images/" + txt2img_name])
    print(f"inpainting vs its init image (mean abs difference, 0..255): {d}", flush=True)
    check("error" not in d and d["w"] == 64 and d["bw"] == 64, f"both images read: {d}")
    check(d["all"] > 0, f"the inpainted image differs from the init image: {d}")
    check(d["right"] < 20, f"far from the mask the image stays close to the init image: {d}")
    check(d["left"] > d["right"], f"the painted part changed more than the rest: {d}")
    d2 = page.d.execute_async_script(PIXELS_JS, [base + "api/v1/images/" + inp, base + "api/v1/images/" + i2i])
    check(d2["all"] > 0, f"inpainting differs from plain img2img: {d2}")

    # Invert, then clear: back to img2img; removing the image: back to text to image.
    page.el("mask-invert").click()
    check(page.js("return document.getElementById('image-panel').dataset.mode") == "inpaint", "an inverted mask still inpaints")
    page.el("mask-clear").click()
    check(page.js("return document.getElementById('image-panel').dataset.mode") == "img2img", "a cleared mask is img2img")
    page.el("init-clear").click()
    check(page.js("return document.getElementById('image-panel').dataset.mode") == "txt2img", "no image: text to image")
    body = page.js("return jobBody();")
    check("init_image" not in body and "mask" not in body, f"the job body has no image fields: {list(body)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="the studio's URL, e.g. http://127.0.0.1:7860/")
    ap.add_argument("--screenshot-dir", help="where to write studio.png and friends")
    ap.add_argument("--timeout", type=float, default=120, help="seconds to wait for each step")
    args = ap.parse_args()
    base = args.url if args.url.endswith("/") else args.url + "/"
    if args.screenshot_dir:
        os.makedirs(args.screenshot_dir, exist_ok=True)

    driver = start_browser()
    page = Page(driver, base, args.timeout)
    t0 = time.time()
    try:
        page.open()
        check(driver.title.startswith("wgsd studio"), f"the page title: {driver.title!r}")
        check(len(page.js("return Array.from(document.getElementById('model').options).map(o => o.value)")) >= 1,
              "the model picker lists the server's models")
        error_in_words(page, base, args.screenshot_dir)
        name = generate_and_history(page, base, args.screenshot_dir)
        click_puts_params_back(page, base, name)
        reload_keeps_history(page, name)
        drop_png(page, base, name)
        cancel_long_job(page, base, args.screenshot_dir)
        several_images(page, args.screenshot_dir)
        hires_fix(page, args.screenshot_dir)
        img2img_and_mask(page, base, name, args.screenshot_dir)
    except Exception as e:  # noqa: BLE001 - report anything, with the browser's view of it
        print(f"FAILED: {type(e).__name__}: {e}", flush=True)
        try:
            print(f"page error banner: {page.error_text()!r}; progress: {page.progress()}")
            for entry in driver.get_log("browser"):
                print(f"browser console: {entry.get('level')} {entry.get('message')}")
            page.shot(args.screenshot_dir and os.path.join(args.screenshot_dir, "failure.png"))
        except Exception as inner:  # noqa: BLE001
            print(f"(could not read the page after the failure: {inner})")
        driver.quit()
        return 1
    driver.quit()
    print(f"all studio browser checks passed in {time.time() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
