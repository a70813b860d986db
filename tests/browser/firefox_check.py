"""A manual Firefox check of the studio page (not part of `cargo test`: geckodriver cannot
be installed on the project's machines, so Selenium cannot drive Firefox there). Drives
Firefox ESR headless through its Marionette protocol (PyPI's `marionette_driver`): the
options load, a typed prompt generates, a preview arrives, the image reaches the gallery;
a screenshot goes to /tmp/ff-studio.png.

    apt-get install firefox-esr; pip install marionette_driver
    wgsd studio --port 7872 --outputs /tmp/ffout &
    python tests/browser/firefox_check.py http://127.0.0.1:7872/
"""
import subprocess
import sys
import tempfile
from marionette_driver.marionette import Marionette
from marionette_driver import By, Wait

url = sys.argv[1]
PROFILE = tempfile.mkdtemp(prefix="wgsd-ff-")
ff = subprocess.Popen(["firefox-esr", "--headless", "--marionette", "--no-remote", "--profile", PROFILE],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    m = Marionette(host="127.0.0.1", port=2828)
    m.start_session()
    m.navigate(url)
    Wait(m, timeout=30).until(lambda mm: mm.execute_script("return document.querySelectorAll('#model option').length") > 0)
    print("options loaded:", m.execute_script("return document.getElementById('model').value"),
          m.execute_script("return document.querySelectorAll('#scheduler option').length"), "samplers")
    m.execute_script("""
      const p = document.getElementById('prompt'); p.value = 'a green square on a black background';
      p.dispatchEvent(new Event('input'));
      const s = document.getElementById('steps'); s.value = '8'; s.dispatchEvent(new Event('input'));
      document.getElementById('generate').click();""")
    Wait(m, timeout=120).until(lambda mm: int(mm.execute_script("return Number(document.getElementById('preview').dataset.updates || 0)")) > 0)
    print("preview updates:", m.execute_script("return document.getElementById('preview').dataset.updates"))
    Wait(m, timeout=120).until(lambda mm: mm.execute_script("return document.querySelectorAll('#gallery img').length") > 0)
    print("gallery images:", m.execute_script("return document.querySelectorAll('#gallery img').length"))
    print("progress:", m.execute_script("return document.getElementById('progress').innerText"))
    png = m.screenshot(format="binary")
    open("/tmp/ff-studio.png", "wb").write(png)
    print("FIREFOX OK")
    m.delete_session()
finally:
    ff.terminate()
