#!/usr/bin/env python3
"""Trains weights/shapes-tiny.zip: a tiny Stable Diffusion pipeline that draws what it is
asked, made of the real diffusers / transformers classes, on the CPU, deterministically.

The model draws one shape (circle, square, triangle) in one colour (red, green, blue,
yellow), roughly centred and a third to a half of the image wide, on a plain background
(white, black, gray), at 64 x 64 pixels, for prompts of the form
    "a {colour} {shape} on a {background} background".

Requirements (versions used for the committed files in brackets): Python 3.11, torch (2.15
CPU), diffusers (0.42.1), transformers (5.24), open_clip_torch (3.3; only for its bundled
CLIP BPE vocabulary), safetensors, numpy, Pillow. No network access is needed.

How to run (from the repository root; about 30 min on a busy 2-core machine):
    python3 weights/make_shapes_model.py

Recipe (every number is a constant below):
  1. Dataset: 36 captions x IMAGES_PER_CAPTION images drawn with PIL at 4x and box-filtered
     down to 64 x 64 (anti-aliased edges); size and centre jittered by a seeded numpy
     generator. The triangle is placed by its centroid.
  2. AutoencoderKL with 3 levels (4x downsampling: a 64 x 64 image is a 4 x 16 x 16
     latent), trained on reconstruction (MSE) + a tiny KL term. scaling_factor is then
     1 / std of the dataset's latents (posterior means).
  3. CLIPTextModel (real 49408-token vocabulary, 77 positions, hidden 64, 2 layers) and a
     small UNet2DConditionModel trained together on the DDPM loss with v-prediction
     targets (SD's scaled_linear betas over 1000 timesteps, min-SNR-5 weighting), 10% of captions
     dropped to "" so that classifier-free guidance works; two phases (DIFFUSION_PHASES:
     1000 steps at lr 1e-3, then 500 at 3e-4 from the first phase's EMA with a fresh
     Adam), and the EMA of the weights is what ships. Why v and not epsilon: these images are flat colours, so at all but the
     highest noise levels the colours can be read from the noisy latent itself, and at the
     highest ones an epsilon target hardly depends on the image (x_t is nearly all noise);
     trained on epsilon, the model learnt to ignore the prompt (first attempt: 1500 steps,
     most colours wrong). A v target is about -x0 at high noise, so it must come from the
     text.
  4. StableDiffusionPipeline(..., safety_checker=None, feature_extractor=None,
     requires_safety_checker=False) with an EulerDiscreteScheduler on the training betas
     (trailing spacing), save_pretrained (f32 safetensors), the tokenizer in the legacy
     CLIP layout (vocab.json, merges.txt, ...), zipped like weights/sd2-tiny.zip (contents
     at the zip root, sorted entries, fixed timestamps; see tests/fixtures/make_fixtures.py,
     whose helpers this script reuses).
  5. Check: the archive is loaded back with from_pretrained and every caption is generated
     with 20 steps, guidance 7.5, for CHECK_SEEDS; the mean colour of the centre patch must
     be nearest (of the 4 colours) to the prompt's colour and the mean of the four corner
     patches nearest (of the 3 backgrounds) to its background. The 12 cases that
     tests/shapes_model.rs runs (TEST_CASES) are checked with their exact seeds. A table
     is printed; the script exits with status 1 when a test case fails.

It writes:
  weights/shapes-tiny.zip                      the model (diffusers format, zipped)
  tests/fixtures/shapes-tiny/reference.png     diffusers' f32 image for REFERENCE_PROMPT
  tests/fixtures/shapes-tiny/reference.json    its settings, the palette, the test cases
                                               with diffusers' measured colours, versions
  docs/shapes-tiny.png                         contact sheet of the 12 test cases (diffusers)

Deterministic: fixed seeds (torch, numpy, random), one torch thread (with two threads on a
shared 2-core machine a step was 5x slower, and one thread fixes the reduction order),
torch.use_deterministic_algorithms(True), fixed zip timestamps and order. Timings are
printed per phase.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
import make_fixtures as mf  # noqa: E402  (CLIP vocabulary, legacy tokenizer files, zip_dir)

import diffusers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDPMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

SEED = 13
SIZE = 64  # native image size (pixels)

# Palette (RGB, 0-255). tests/shapes_model.rs holds the same values.
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 30),
}
BACKGROUNDS = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle")

IMAGES_PER_CAPTION = 40
SHAPE_WIDTH = (SIZE / 3 + 0.7, SIZE / 2)  # 22 to 32 px wide
CENTRE_JITTER = 3.0  # px, each axis
DRAW_SCALE = 4  # draw at 4x, box-filter down

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(16, 32, 32),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=SIZE,
)
VAE_STEPS = 500
VAE_BATCH = 16
VAE_LR = 1e-3
VAE_KL_WEIGHT = 1e-6  # on the mean KL per latent element, against the mean pixel MSE

TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=64,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
)
UNET_CONFIG = dict(
    sample_size=SIZE // 4,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    attention_head_dim=4,  # an int: 4 heads in every block, as SD 1.x reads it
    cross_attention_dim=TEXT_CONFIG["hidden_size"],
    norm_num_groups=8,
    flip_sin_to_cos=True,
    freq_shift=0,
)
# Phase 2 starts from phase 1's EMA weights with a fresh optimizer at a lower lr.
DIFFUSION_PHASES = (
    dict(steps=1000, lr=1e-3, warmup=100, seed=SEED + 5),
    dict(steps=500, lr=3e-4, warmup=20, seed=SEED + 6),
)
DIFFUSION_BATCH = 32
CAPTION_DROPOUT = 0.1
MIN_SNR_GAMMA = 5.0
EMA_DECAY = 0.995

BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
PREDICTION = "v_prediction"
SCHEDULER_CONFIG = dict(BETAS, prediction_type=PREDICTION, timestep_spacing="trailing", steps_offset=1)

STEPS = 20
GUIDANCE = 7.5
CHECK_SEEDS = (1, 2, 3)
REFERENCE_PROMPT = "a red circle on a white background"
REFERENCE_SEED = 42
PATCH = 8  # side of the centre patch and of each corner patch (pixels)

OUT_ZIP = ROOT / "weights" / "shapes-tiny.zip"
OUT_FIXTURE = ROOT / "tests" / "fixtures" / "shapes-tiny"
OUT_SHEET = ROOT / "docs" / "shapes-tiny.png"


def caption(colour: str, shape: str, background: str) -> str:
    return f"a {colour} {shape} on a {background} background"


def test_cases() -> list[dict]:
    """The 12 colour x background cases of tests/shapes_model.rs (shape cycles)."""
    cols, bgs = list(COLOURS), list(BACKGROUNDS)
    cases = []
    for i in range(len(cols) * len(bgs)):
        c, b, s = cols[i % 4], bgs[i // 4], SHAPES[i % 3]
        cases.append({"colour": c, "background": b, "shape": s, "prompt": caption(c, s, b), "seed": 1000 + i})
    return cases


class Timer:
    def __init__(self):
        self.t0 = time.time()
        self.last = self.t0
        self.rows = []

    def lap(self, what: str) -> None:
        now = time.time()
        self.rows.append((what, now - self.last))
        print(f"[{now - self.t0:7.1f} s] {what}: {now - self.last:.1f} s", flush=True)
        self.last = now


# --------------------------------------------------------------------------------------
# 1. Dataset


def draw(shape: str, colour, background, width: float, cx: float, cy: float) -> np.ndarray:
    k = DRAW_SCALE
    im = Image.new("RGB", (SIZE * k, SIZE * k), background)
    d = ImageDraw.Draw(im)
    r = width / 2
    if shape == "circle":
        d.ellipse([(cx - r) * k, (cy - r) * k, (cx + r) * k, (cy + r) * k], fill=colour)
    elif shape == "square":
        d.rectangle([(cx - r) * k, (cy - r) * k, (cx + r) * k, (cy + r) * k], fill=colour)
    else:  # near-equilateral triangle, centroid at (cx, cy)
        h = width * 0.9
        pts = [(cx, cy - 2 * h / 3), (cx - r, cy + h / 3), (cx + r, cy + h / 3)]
        d.polygon([(x * k, y * k) for x, y in pts], fill=colour)
    return np.asarray(im.resize((SIZE, SIZE), Image.BOX), dtype=np.uint8)


def make_dataset() -> tuple[np.ndarray, list[str], np.ndarray]:
    """Images [N, 64, 64, 3] u8, the 36 captions, and each image's caption index."""
    rng = np.random.RandomState(SEED)
    captions, images, labels = [], [], []
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            for bg, bg_rgb in BACKGROUNDS.items():
                ci = len(captions)
                captions.append(caption(colour, shape, bg))
                for _ in range(IMAGES_PER_CAPTION):
                    w = rng.uniform(*SHAPE_WIDTH)
                    cx, cy = SIZE / 2 + rng.uniform(-CENTRE_JITTER, CENTRE_JITTER, size=2)
                    images.append(draw(shape, rgb, bg_rgb, w, cx, cy))
                    labels.append(ci)
    return np.stack(images), captions, np.array(labels)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """u8 NHWC -> float NCHW in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


# --------------------------------------------------------------------------------------
# 2. VAE


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


def train_vae(x: torch.Tensor) -> AutoencoderKL:
    torch.manual_seed(SEED + 1)
    vae = AutoencoderKL(**VAE_CONFIG)
    vae.train()
    opt = torch.optim.Adam(vae.parameters(), lr=VAE_LR)
    g = torch.Generator().manual_seed(SEED + 2)
    t0 = time.time()
    for step in range(VAE_STEPS):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, VAE_STEPS, VAE_LR, 20)
        batch = x[torch.randint(0, len(x), (VAE_BATCH,), generator=g)]
        post = vae.encode(batch).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        rec = vae.decode(z).sample
        mse = (rec - batch).pow(2).mean()
        kl = post.kl().mean() / post.mean[0].numel()
        loss = mse + VAE_KL_WEIGHT * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == VAE_STEPS - 1:
            el = time.time() - t0
            print(
                f"  vae step {step:4d}  mse {mse.item():.5f}  kl/elem {kl.item():.2f}  "
                f"{el:.0f} s, eta {el / (step + 1) * (VAE_STEPS - step - 1):.0f} s",
                flush=True,
            )
    return vae.eval()


@torch.no_grad()
def encode_all(vae: AutoencoderKL, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([vae.encode(x[i : i + 64]).latent_dist.mean for i in range(0, len(x), 64)])


# --------------------------------------------------------------------------------------
# 3. Text encoder + UNet


def new_denoiser() -> tuple[CLIPTextModel, UNet2DConditionModel]:
    torch.manual_seed(SEED + 3)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    with torch.no_grad():
        # Rows of tokens that never occur keep their initial values; rounded to multiples
        # of 2^-10 they deflate ~3x in the archive (the table is 49408 x 64).
        emb = text_encoder.get_input_embeddings().weight
        emb.copy_(torch.round(emb * 1024.0) / 1024.0)
    torch.manual_seed(SEED + 4)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    return text_encoder, unet


def train_denoiser(text_encoder, unet, latents: torch.Tensor, labels: np.ndarray, ids: torch.Tensor, phase: dict):
    """One training phase (a fresh Adam, its own seed and lr schedule); the weights end as
    the phase's EMA. latents: scaled [N, 4, 16, 16]; ids: [37, 77] (36 captions, then "")."""
    steps, peak = phase["steps"], phase["lr"]
    text_encoder.train()
    unet.train()
    modules = {"text_encoder": text_encoder, "unet": unet}
    params = [p for m in modules.values() for p in m.parameters()]
    # Adam without weight decay: a row that gets no gradient is left exactly as it is.
    opt = torch.optim.Adam(params, lr=peak)
    ema = {id(p): p.detach().clone() for p in params}
    noise_sched = DDPMScheduler(**BETAS)
    alphas_cumprod = noise_sched.alphas_cumprod
    snr = alphas_cumprod / (1 - alphas_cumprod)
    weight = torch.clamp(snr, max=MIN_SNR_GAMMA) / (snr + 1)  # min-SNR-gamma for v targets
    labels_t = torch.from_numpy(labels)
    empty = ids.shape[0] - 1
    g = torch.Generator().manual_seed(phase["seed"])
    t0 = time.time()
    running = 0.0
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, peak, phase["warmup"])
        idx = torch.randint(0, len(latents), (DIFFUSION_BATCH,), generator=g)
        x0 = latents[idx]
        cap = labels_t[idx].clone()
        cap[torch.rand(DIFFUSION_BATCH, generator=g) < CAPTION_DROPOUT] = empty
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, BETAS["num_train_timesteps"], (DIFFUSION_BATCH,), generator=g)
        noisy = noise_sched.add_noise(x0, noise, t)
        hidden = text_encoder(ids).last_hidden_state  # all 37 prompts, then pick
        pred = unet(noisy, t, hidden[cap]).sample
        target = noise_sched.get_velocity(x0, noise, t)
        per = (pred - target).pow(2).mean(dim=(1, 2, 3))
        loss = (per * weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            d = min(EMA_DECAY, (1 + step) / (10 + step))
            for p in params:
                # lerp: an unchanged weight stays bit-identical in the EMA
                ema[id(p)].lerp_(p.detach(), 1 - d)
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if step % 100 == 0 or step == steps - 1:
            el = time.time() - t0
            print(
                f"  diffusion step {step:5d}  loss {running:.4f}  lr {opt.param_groups[0]['lr']:.1e}  "
                f"{el:.0f} s, eta {el / (step + 1) * (steps - step - 1):.0f} s",
                flush=True,
            )
    with torch.no_grad():
        for p in params:
            p.copy_(ema[id(p)])
    return text_encoder.eval(), unet.eval()


# --------------------------------------------------------------------------------------
# 4. Pipeline, archive


def build_archive(vae, text_encoder, unet, tokenizer_dir: Path, work: Path) -> None:
    scheduler = EulerDiscreteScheduler(**SCHEDULER_CONFIG)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out = work / "shapes-tiny"
    pipe.save_pretrained(out)
    shutil.rmtree(out / "tokenizer")
    shutil.copytree(tokenizer_dir, out / "tokenizer")
    for p in out.rglob("*.json"):
        assert str(work) not in p.read_text(), f"{p} contains the build path"
    tmp = OUT_ZIP.with_suffix(".zip.tmp")
    mf.zip_dir(out, tmp)
    tmp.replace(OUT_ZIP)
    print(f"  {OUT_ZIP.relative_to(ROOT)}: {OUT_ZIP.stat().st_size / 1e6:.2f} MB")


def load_archive(work: Path) -> StableDiffusionPipeline:
    d = work / "extracted"
    if d.exists():
        shutil.rmtree(d)
    with zipfile.ZipFile(OUT_ZIP) as z:
        z.extractall(d)
    pipe = StableDiffusionPipeline.from_pretrained(d, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --------------------------------------------------------------------------------------
# 5. Check


def measure(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean RGB of the centre patch, and the mean of the four corner patches."""
    img = img.astype(np.float64)
    c0 = SIZE // 2 - PATCH // 2
    centre = img[c0 : c0 + PATCH, c0 : c0 + PATCH].reshape(-1, 3).mean(0)
    e = SIZE - PATCH
    corners = [img[y : y + PATCH, x : x + PATCH].reshape(-1, 3).mean(0) for y in (0, e) for x in (0, e)]
    return centre, np.mean(corners, axis=0)


def nearest(rgb: np.ndarray, palette: dict) -> tuple[str, float]:
    """The nearest palette name and the margin: distance to the runner-up minus to it."""
    d = sorted((float(np.linalg.norm(rgb - np.array(v, dtype=np.float64))), k) for k, v in palette.items())
    return d[0][1], d[1][0] - d[0][0]


def generate(pipe, prompts: list[str], seed: int) -> list[np.ndarray]:
    g = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        out = pipe(prompts, num_inference_steps=STEPS, guidance_scale=GUIDANCE, height=SIZE, width=SIZE, generator=g)
    return [np.asarray(im) for im in out.images]


def judge(img: np.ndarray, colour: str, background: str) -> dict:
    centre, corners = measure(img)
    got_c, margin_c = nearest(centre, COLOURS)
    got_b, margin_b = nearest(corners, BACKGROUNDS)
    return {
        "centre_rgb": [round(float(v), 1) for v in centre],
        "corners_rgb": [round(float(v), 1) for v in corners],
        "centre_nearest": got_c,
        "corners_nearest": got_b,
        "centre_margin": round(margin_c, 1),
        "corners_margin": round(margin_b, 1),
        "ok": got_c == colour and got_b == background,
    }


def check_all_captions(pipe) -> bool:
    """Every caption x CHECK_SEEDS; prints the colour x background table."""
    combos = {(c, b): [] for c in COLOURS for b in BACKGROUNDS}
    prompts = [(c, s, b) for c in COLOURS for s in SHAPES for b in BACKGROUNDS]
    for seed in CHECK_SEEDS:
        imgs = generate(pipe, [caption(*p) for p in prompts], seed)
        for (c, s, b), img in zip(prompts, imgs):
            combos[(c, b)].append(judge(img, c, b))
    print(f"  all captions x seeds {CHECK_SEEDS}: passes / cases, smallest margins (centre, corners)")
    print("  " + "".join(f"{b:>24}" for b in BACKGROUNDS))
    all_ok = True
    for c in COLOURS:
        row = f"  {c:7}"
        for b in BACKGROUNDS:
            rs = combos[(c, b)]
            n = sum(r["ok"] for r in rs)
            all_ok &= n == len(rs)
            mc = min(r["centre_margin"] if r["centre_nearest"] == c else -r["centre_margin"] for r in rs)
            mb = min(r["corners_margin"] if r["corners_nearest"] == b else -r["corners_margin"] for r in rs)
            row += f"{n:>6}/{len(rs)} ({mc:6.1f},{mb:6.1f})"
        print(row)
    return all_ok


def check_test_cases(pipe) -> tuple[bool, list[dict], list[np.ndarray]]:
    ok, rows, imgs = True, [], []
    print("  tests/shapes_model.rs cases:")
    for case in test_cases():
        img = generate(pipe, [case["prompt"]], case["seed"])[0]
        r = judge(img, case["colour"], case["background"])
        ok &= r["ok"]
        rows.append({**case, "diffusers": r})
        imgs.append(img)
        print(
            f"    {'ok  ' if r['ok'] else 'FAIL'} seed {case['seed']} {case['prompt']:42} centre {r['centre_rgb']} "
            f"-> {r['centre_nearest']} (+{r['centre_margin']})  corners {r['corners_rgb']} -> "
            f"{r['corners_nearest']} (+{r['corners_margin']})"
        )
    return ok, rows, imgs


def contact_sheet(imgs: list[np.ndarray], path: Path) -> None:
    """Test cases as a grid: a row per background, a column per colour, 2x nearest."""
    cell, gap = SIZE * 2, 4
    cols, rows = len(COLOURS), len(BACKGROUNDS)
    sheet = Image.new("RGB", (cols * cell + (cols + 1) * gap, rows * cell + (rows + 1) * gap), (200, 200, 200))
    for i, img in enumerate(imgs):
        c, r = i % cols, i // cols
        tile = Image.fromarray(img).resize((cell, cell), Image.NEAREST)
        sheet.paste(tile, (gap + c * (cell + gap), gap + r * (cell + gap)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    sheet.save(tmp, optimize=True)
    tmp.replace(path)


def versions() -> dict:
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__}


# --------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--cache",
        type=Path,
        help="keep the trained VAE / denoiser here and reuse them when present (to re-run the export and check)",
    )
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    timer = Timer()
    work = Path(tempfile.mkdtemp(prefix="wgsd-shapes-"))
    try:
        images, captions, labels = make_dataset()
        x = to_tensor(images)
        timer.lap(f"dataset: {len(images)} images, {len(captions)} captions")

        vocab = work / "clip-vocab"
        mf.build_clip_vocab(vocab)
        tok_dir = work / "tokenizer"
        mf.write_legacy_tokenizer(vocab, tok_dir, "<|endoftext|>", "openai/clip-vit-large-patch14")
        tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
        ids = tokenizer(captions + [""], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        timer.lap("tokenizer")

        vae_ckpt = args.cache / "vae.pt" if args.cache else None
        if vae_ckpt and vae_ckpt.exists():
            vae = AutoencoderKL(**VAE_CONFIG)
            vae.load_state_dict(torch.load(vae_ckpt))
            vae.eval()
        else:
            vae = train_vae(x)
            if vae_ckpt:
                vae_ckpt.parent.mkdir(parents=True, exist_ok=True)
                torch.save(vae.state_dict(), vae_ckpt)
        timer.lap("VAE")
        with torch.no_grad():
            mu = encode_all(vae, x)
            rec = torch.cat([vae.decode(mu[i : i + 64]).sample for i in range(0, len(mu), 64)])
        rec_err = (rec.clamp(-1, 1) - x).abs().mul(127.5).mean().item()
        scaling = round(1.0 / mu.std().item(), 5)
        vae.register_to_config(scaling_factor=scaling)
        latents = mu * scaling
        print(f"  VAE reconstruction: mean |error| {rec_err:.2f} / 255; latent mean {mu.mean():.3f} std {mu.std():.3f}; scaling_factor {scaling}")
        timer.lap("latents")

        text_encoder, unet = new_denoiser()
        for i, phase in enumerate(DIFFUSION_PHASES, start=1):
            ckpt = args.cache / f"denoiser-phase{i}.pt" if args.cache else None
            if ckpt and ckpt.exists():
                state = torch.load(ckpt)
                text_encoder.load_state_dict(state["text_encoder"])
                unet.load_state_dict(state["unet"])
            else:
                print(f"  phase {i}: {phase}")
                train_denoiser(text_encoder, unet, latents, labels, ids, phase)
                if ckpt:
                    torch.save({"text_encoder": text_encoder.state_dict(), "unet": unet.state_dict()}, ckpt)
            text_encoder.eval()
            unet.eval()
            timer.lap(f"text encoder + UNet, phase {i}")

        build_archive(vae, text_encoder, unet, tok_dir, work)
        timer.lap("archive")

        pipe = load_archive(work)
        captions_ok = check_all_captions(pipe)
        cases_ok, rows, imgs = check_test_cases(pipe)
        contact_sheet(imgs, OUT_SHEET)
        ref = generate(pipe, [REFERENCE_PROMPT], REFERENCE_SEED)[0]
        OUT_FIXTURE.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ref).save(OUT_FIXTURE / "reference.png")
        info = {
            "made_by": "weights/make_shapes_model.py",
            "archive": str(OUT_ZIP.relative_to(ROOT)),
            "archive_sha256": hashlib.sha256(OUT_ZIP.read_bytes()).hexdigest(),
            "reference": {
                "image": "reference.png",
                "prompt": REFERENCE_PROMPT,
                "negative_prompt": None,
                "seed": REFERENCE_SEED,
                "num_inference_steps": STEPS,
                "guidance_scale": GUIDANCE,
                "width": SIZE,
                "height": SIZE,
                "scheduler": type(pipe.scheduler).__name__,
                "scheduler_config": mf.clean_config(pipe.scheduler.config),
                "generator": "torch.Generator('cpu').manual_seed(seed)",
                "dtype": "float32",
            },
            "reference_measured": judge(ref, "red", "white"),
            "palette": {"colours": COLOURS, "backgrounds": BACKGROUNDS},
            "patch": PATCH,
            "test_cases": rows,
            "versions": versions(),
        }
        mf.write_json(OUT_FIXTURE / "reference.json", info)
        timer.lap("check + references")
        print("timings: " + ", ".join(f"{w} {s:.0f} s" for w, s in timer.rows))
        print(f"total {time.time() - timer.t0:.0f} s")
        print(f"all captions right: {captions_ok}; test cases right: {cases_ok}")
        return 0 if cases_ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
