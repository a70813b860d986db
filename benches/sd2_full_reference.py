#!/usr/bin/env python3
"""Full-size Stable Diffusion 2 (768-v architecture) with random weights, for checking
wgsd against diffusers on a real GPU where no real weights can be downloaded.

    build DIR              save a diffusers folder: SD2 UNet/VAE/text-encoder configs, random
                           weights (torch.manual_seed(0)), the real CLIP tokenizer and the
                           DDIM v-prediction scheduler taken from weights/sd2-tiny.zip
    reference DIR OUT.png  run diffusers' StableDiffusionPipeline (f32, TF32 off, CPU
                           generator as wgsd's seeds) and save the image; prints timings
    speed DIR              time diffusers in f16 (SDPA) at the same settings
    psnr A.png B.png       PSNR of two u8 images, with max abs difference

Settings: --size (768), --steps, --seed, --prompt, --guidance (7.5).
"""

import argparse
import json
import math
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

UNET = dict(
    act_fn="silu", attention_head_dim=[5, 10, 20, 20], block_out_channels=[320, 640, 1280, 1280],
    center_input_sample=False, cross_attention_dim=1024,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1, dual_cross_attention=False, flip_sin_to_cos=True, freq_shift=0, in_channels=4,
    layers_per_block=2, mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32, out_channels=4,
    sample_size=96, up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    use_linear_projection=True, upcast_attention=True,
)
VAE = dict(
    act_fn="silu", block_out_channels=[128, 256, 512, 512], in_channels=3, latent_channels=4,
    layers_per_block=2, norm_num_groups=32, out_channels=3, sample_size=768,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    scaling_factor=0.18215,
)
# text_encoder/config.json of stabilityai/stable-diffusion-2 (OpenCLIP ViT-H/14 text tower).
TEXT = dict(
    hidden_act="gelu", hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
    num_hidden_layers=23, max_position_embeddings=77, projection_dim=512, vocab_size=49408,
    layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2, pad_token_id=1,
)


def build(out: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    t0 = time.time()
    tiny = out.parent / "sd2-tiny-src"
    with zipfile.ZipFile(ROOT / "weights" / "sd2-tiny.zip") as z:
        z.extractall(tiny)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**UNET)
    vae = AutoencoderKL(**VAE)
    text = CLIPTextModel(CLIPTextConfig(**TEXT))
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=CLIPTokenizer.from_pretrained(tiny / "tokenizer"),
        unet=unet, scheduler=DDIMScheduler.from_pretrained(tiny / "scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    n = sum(p.numel() for p in unet.parameters())
    print(json.dumps({"built": str(out), "unet_params": n, "seconds": round(time.time() - t0, 1)}))


def run_pipe(args, dtype):
    import torch
    from diffusers import StableDiffusionPipeline

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = StableDiffusionPipeline.from_pretrained(args.dir, torch_dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(
        prompt=args.prompt, num_inference_steps=args.steps, guidance_scale=args.guidance,
        width=args.size, height=args.size, output_type="np",
    )
    images = None
    times = []
    for _ in range(args.repeats):
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        sync()
        t0 = time.time()
        images = pipe(generator=torch.Generator("cpu").manual_seed(args.seed), **kw).images
        sync()
        times.append(time.time() - t0)
    return images, times


def reference(args) -> None:
    import numpy as np
    import torch
    from PIL import Image

    images, times = run_pipe(args, torch.float32)
    u8 = (images[0] * 255).round().astype(np.uint8)
    Image.fromarray(u8).save(args.out)
    print(json.dumps({"diffusers_f32_seconds": [round(t, 2) for t in times],
                      "steps": args.steps, "size": args.size,
                      "mean": float(u8.mean()), "std": float(u8.std()),
                      "saturated": float(((u8 == 0) | (u8 == 255)).mean())}))


def speed(args) -> None:
    import torch

    _, times = run_pipe(args, torch.float16)
    print(json.dumps({"diffusers_f16_seconds": [round(t, 2) for t in times],
                      "steps": args.steps, "size": args.size}))


def psnr(a: Path, b: Path) -> None:
    import numpy as np
    from PIL import Image

    x = np.asarray(Image.open(a).convert("RGB"), dtype=np.float64)
    y = np.asarray(Image.open(b).convert("RGB"), dtype=np.float64)
    mse = float(((x - y) ** 2).mean())
    db = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
    print(json.dumps({"psnr_db": db, "max_abs_diff": float(np.abs(x - y).max()),
                      "differing_bytes": float((x != y).mean())}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["build", "reference", "speed", "psnr"])
    p.add_argument("dir")
    p.add_argument("out", nargs="?")
    p.add_argument("--size", type=int, default=768)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--prompt", default="a red fox in the snow")
    args = p.parse_args()
    if args.cmd == "build":
        build(Path(args.dir))
    elif args.cmd == "reference":
        reference(args)
    elif args.cmd == "speed":
        speed(args)
    else:
        psnr(Path(args.dir), Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
