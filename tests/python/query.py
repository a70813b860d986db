"""A client written like TorchServe's Stable Diffusion example (query.py): POST the
prompt, turn the JSON nested list back into an image with numpy, save it with PIL.

    python3 tests/python/query.py --url http://127.0.0.1:8080/predictions/sd \
        --prompt "a red fox" --seed 7 --width 64 --height 48 --steps 5 --output fox.png

With none of --seed/--width/--height/--steps the prompt goes as the raw body, exactly as
the example sends it; otherwise as JSON parameters.
"""

import argparse
import json

import numpy as np
import requests
from PIL import Image


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080/predictions/stable-diffusion")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--output", default="output.png")
    args = parser.parse_args()

    params = {
        "seed": args.seed,
        "width": args.width,
        "height": args.height,
        "num_inference_steps": args.steps,
    }
    params = {k: v for k, v in params.items() if v is not None}
    if params:
        response = requests.post(args.url, json={"prompt": args.prompt, **params}, timeout=600)
    else:
        response = requests.post(args.url, data=args.prompt, timeout=600)
    response.raise_for_status()

    image = Image.fromarray(np.array(json.loads(response.text), dtype="uint8"))
    image.save(args.output)
    print(f"saved {image.size[0]}x{image.size[1]} image to {args.output}")


if __name__ == "__main__":
    main()
