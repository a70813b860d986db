"""Generates images through wgsd with the unchanged official `openai` package (PyPI):
`client.images.generate` with `base_url` pointing at the server. Exits non-zero when
anything is off; prints a JSON summary.

    python openai_client.py --base-url http://127.0.0.1:8080/v1 --model sd [--api-key KEY]
"""
import argparse
import base64
import io
import json

from openai import OpenAI, BadRequestError, NotFoundError
from PIL import Image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--api-key", default="anything")
    args = ap.parse_args()

    client = OpenAI(base_url=args.base_url, api_key=args.api_key)
    models = [m.id for m in client.models.list()]
    assert args.model in models, models

    r = client.images.generate(model=args.model, prompt="a red circle on a white background",
                               n=2, size="32x32", response_format="b64_json",
                               extra_body={"seed": 42, "steps": 3})
    assert len(r.data) == 2, r
    sizes = []
    for d in r.data:
        im = Image.open(io.BytesIO(base64.b64decode(d.b64_json)))
        sizes.append(im.size)
        assert "parameters" in im.info, im.info
    assert sizes == [(32, 32), (32, 32)], sizes
    assert r.created > 0

    # OpenAI's error shapes come back as the client's exceptions.
    try:
        client.images.generate(model=args.model, prompt="x", size="31x31")
        raise AssertionError("a bad size was accepted")
    except BadRequestError as e:
        assert e.body["param"] == "size", e.body
    try:
        client.images.generate(model="no-such-model", prompt="x")
        raise AssertionError("an unknown model was accepted")
    except NotFoundError as e:
        assert e.body["code"] == "model_not_found", e.body

    print(json.dumps({"images": len(r.data), "sizes": sizes, "models": models}))


if __name__ == "__main__":
    main()
