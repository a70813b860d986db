"""Drives wgsd's AUTOMATIC1111 API with the unchanged `webuiapi` package (PyPI), as the
tools built on it do: txt2img with a batch, img2img, inpainting (mask_image), options, samplers, progress while a job runs
in a thread, and interrupt. Exits non-zero (an AssertionError) when anything is off;
prints a JSON summary.

    python a1111_client.py --host 127.0.0.1 --port 7860 [--user alice --password secret]
"""
import argparse
import json
import threading
import time

import webuiapi
from PIL import Image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--user")
    ap.add_argument("--password")
    args = ap.parse_args()

    api = webuiapi.WebUIApi(host=args.host, port=args.port, sampler="Euler a", steps=3,
                            username=args.user, password=args.password)

    # txt2img: a batch of two, seeds seed and seed + 1.
    result = api.txt2img(prompt="a red circle on a white background", seed=1234,
                         width=32, height=32, batch_size=2, cfg_scale=7)
    assert len(result.images) == 2, result.info
    assert all(im.size == (32, 32) for im in result.images), [im.size for im in result.images]
    assert result.info["all_seeds"] == [1234, 1235], result.info["all_seeds"]
    assert result.info["sampler_name"] == "Euler a", result.info["sampler_name"]
    assert "parameters" in result.images[0].info, result.images[0].info

    # img2img: the first image back in at half strength (webuiapi sends it as a data: URL).
    i2i = api.img2img(images=[result.images[0]], prompt="a blue circle on a white background",
                      seed=99, denoising_strength=0.5, width=32, height=32, cfg_scale=7)
    assert len(i2i.images) == 1 and i2i.images[0].size == (32, 32), i2i.info
    assert i2i.info["denoising_strength"] == 0.5, i2i.info
    assert i2i.info["all_seeds"] == [99], i2i.info["all_seeds"]

    # Hires fix: 32x32 -> 48x48 with webuiapi's default upscaler ("Latent").
    hr = api.txt2img(prompt="a red circle", seed=5, width=32, height=32, cfg_scale=7,
                     enable_hr=True, hr_scale=1.5, denoising_strength=0.7)
    assert hr.images[0].size == (48, 48), hr.images[0].size
    assert hr.info["width"] == 32, hr.info
    assert hr.info["extra_generation_params"]["Hires upscaler"] == "Latent", hr.info
    assert "Hires upscale: 1.5" in hr.info["infotexts"][0], hr.info["infotexts"][0]
    # Inpainting: a mask (white repaints). webuiapi sends A1111's defaults
    # inpainting_fill=0 and inpaint_full_res=True, which wgsd refuses (422 naming the
    # field); with 1 / False it inpaints as diffusers' StableDiffusionInpaintPipeline.
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    try:
        api.img2img(images=[result.images[0]], mask_image=mask, prompt="x", seed=5,
                    width=32, height=32)
        raise AssertionError("inpainting_fill=0 must be refused")
    except RuntimeError as e:
        assert e.args[0] == 422 and "inpainting_fill" in e.args[1], e.args
    inp = api.img2img(images=[result.images[0]], mask_image=mask,
                      prompt="a blue circle on a white background", seed=99,
                      denoising_strength=0.5, width=32, height=32, cfg_scale=7,
                      inpainting_fill=1, inpaint_full_res=False, mask_blur=2)
    assert len(inp.images) == 1 and inp.images[0].size == (32, 32), inp.info
    assert inp.info["all_seeds"] == [99], inp.info["all_seeds"]
    assert inp.images[0].tobytes() != i2i.images[0].tobytes(), "the mask changes the image"

    # Options: an unknown key is stored and read back.
    api.set_options({"wgsd_client_test": "kept"})
    options = api.get_options()
    assert options["wgsd_client_test"] == "kept", options
    model = options["sd_model_checkpoint"]

    samplers = [s["name"] for s in api.get_samplers()]
    assert "Euler a" in samplers and "DPM++ 2M Karras" in samplers, samplers
    models = [m["title"] for m in api.get_sd_models()]
    assert model in models, (model, models)

    # Progress while a long job runs in a thread, then interrupt: the job answers with
    # its (less denoised) image.
    box = {}

    def run():
        box["result"] = api.txt2img(prompt="a blue square", seed=7, width=32, height=32,
                                    steps=400)

    thread = threading.Thread(target=run)
    thread.start()
    seen = None
    deadline = time.time() + 120
    while time.time() < deadline:
        p = api.get_progress()
        if p["state"]["sampling_step"] > 0 and p["state"]["job_count"] > 0:
            seen = p
            break
        time.sleep(0.01)
    assert seen is not None, "no progress seen"
    assert 0 < seen["progress"] <= 1, seen["progress"]
    api.interrupt()
    thread.join(120)
    assert not thread.is_alive(), "interrupt did not end the job"
    interrupted = box["result"]
    assert len(interrupted.images) == 1, interrupted.info
    assert interrupted.info["interrupted"] is True, interrupted.info
    assert interrupted.info["steps_done"][0] < 400, interrupted.info["steps_done"]

    print(json.dumps({
        "seeds": result.info["all_seeds"],
        "model": model,
        "samplers": len(samplers),
        "progress_step": seen["state"]["sampling_step"],
        "interrupted_after": interrupted.info["steps_done"][0],
    }))


if __name__ == "__main__":
    main()
