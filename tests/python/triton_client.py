"""NVIDIA's Triton clients (`tritonclient[http,grpc]` from PyPI), unchanged, against
`wgsd serve`'s Open Inference Protocol routes: REST (with and without the binary tensor
extension) and gRPC. Run by tests/serve_triton.rs, which compares the images with the
REST JSON route's.

Prints one JSON line: each infer call's image shape and sha256, and what the metadata,
readiness and error calls returned.
"""

import argparse
import hashlib
import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def digest(array):
    assert array.dtype == np.uint8, array.dtype
    return {"shape": list(array.shape), "sha256": hashlib.sha256(array.tobytes()).hexdigest()}


def prompt_input(module, prompt, binary=None):
    tensor = module.InferInput("prompt", [1], "BYTES")
    data = np.array([prompt.encode()], dtype=np.object_)
    if binary is None:
        tensor.set_data_from_numpy(data)
    else:
        tensor.set_data_from_numpy(data, binary_data=binary)
    return tensor


def grpc_error(call):
    """The gRPC status name of a call that must fail (e.g. "NOT_FOUND")."""
    try:
        call()
    except InferenceServerException as e:
        return {"status": str(e.status()).replace("StatusCode.", ""), "message": e.message()}
    raise AssertionError("the call succeeded; it should have failed")


def http_error(call):
    try:
        call()
    except InferenceServerException as e:
        return {"status": str(e.status()), "message": e.message()}
    raise AssertionError("the call succeeded; it should have failed")


def grpc_tls(args, params):
    """Only gRPC over TLS, trusting the PEM certificate `args.tls_root`."""
    with open(args.tls_root, "rb") as f:
        root = f.read()
    grpc = grpcclient.InferenceServerClient(url=args.grpc, ssl=True, root_certificates=args.tls_root)
    out = {"root_bytes": len(root), "grpc_tls_live": grpc.is_server_live()}
    r = grpc.infer(args.model, [prompt_input(grpcclient, args.prompt)],
                   outputs=[grpcclient.InferRequestedOutput("image")], parameters=params)
    out["grpc_tls"] = digest(r.as_numpy("image"))
    plain = grpcclient.InferenceServerClient(url=args.grpc)
    try:
        plain.is_server_live()
        out["grpc_plaintext_refused"] = False
    except InferenceServerException:
        out["grpc_plaintext_refused"] = True
    print(json.dumps(out, default=str))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--http", required=True, help="HOST:PORT of the inference API")
    p.add_argument("--grpc", required=True, help="HOST:PORT of the gRPC service")
    p.add_argument("--model", default="sd")
    p.add_argument("--prompt", default="a red circle on a white background")
    p.add_argument("--token", default=None)
    p.add_argument("--params", default="{}", help="request parameters as JSON")
    p.add_argument("--tls-root", help="gRPC over TLS only, trusting this PEM certificate")
    args = p.parse_args()
    params = json.loads(args.params)
    if args.tls_root:
        return grpc_tls(args, params)
    token = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    grpc_headers = {"authorization": f"Bearer {args.token}"} if args.token else None

    def headers():
        # tritonclient.http writes Inference-Header-Content-Length into the dict it is
        # given and leaves it there: a fresh one per call.
        return dict(token)

    out = {}

    http = httpclient.InferenceServerClient(url=args.http)
    out["http_live"] = http.is_server_live(headers=headers())
    out["http_ready"] = http.is_server_ready(headers=headers())
    out["http_model_ready"] = http.is_model_ready(args.model, headers=headers())
    out["http_server_metadata"] = http.get_server_metadata(headers=headers())
    out["http_model_metadata"] = http.get_model_metadata(args.model, headers=headers())

    # The default call: binary input, binary output by `binary_data_output`.
    r = http.infer(args.model, [prompt_input(httpclient, args.prompt)], parameters=params, headers=headers())
    out["http_binary_default"] = digest(r.as_numpy("image"))
    # Binary asked per output.
    r = http.infer(
        args.model,
        [prompt_input(httpclient, args.prompt, binary=True)],
        outputs=[httpclient.InferRequestedOutput("image", binary_data=True)],
        parameters=params,
        headers=headers(),
    )
    out["http_binary"] = digest(r.as_numpy("image"))
    # All JSON.
    r = http.infer(
        args.model,
        [prompt_input(httpclient, args.prompt, binary=False)],
        outputs=[httpclient.InferRequestedOutput("image", binary_data=False)],
        parameters=params,
        headers=headers(),
    )
    out["http_json"] = digest(r.as_numpy("image"))
    out["http_unknown_model"] = http_error(
        lambda: http.infer("no-such-model", [prompt_input(httpclient, args.prompt)], headers=headers())
    )

    grpc = grpcclient.InferenceServerClient(url=args.grpc)
    out["grpc_live"] = grpc.is_server_live(headers=grpc_headers)
    out["grpc_ready"] = grpc.is_server_ready(headers=grpc_headers)
    out["grpc_model_ready"] = grpc.is_model_ready(args.model, headers=grpc_headers)
    meta = grpc.get_server_metadata(headers=grpc_headers, as_json=True)
    out["grpc_server_metadata"] = meta
    out["grpc_model_metadata"] = grpc.get_model_metadata(args.model, headers=grpc_headers, as_json=True)
    r = grpc.infer(
        args.model,
        [prompt_input(grpcclient, args.prompt)],
        outputs=[grpcclient.InferRequestedOutput("image")],
        parameters=params,
        headers=grpc_headers,
        request_id="triton-1",
    )
    out["grpc"] = digest(r.as_numpy("image"))
    out["grpc_id"] = r.get_response().id

    out["grpc_unknown_model"] = grpc_error(
        lambda: grpc.infer("no-such-model", [prompt_input(grpcclient, args.prompt)], headers=grpc_headers)
    )
    fp32 = grpcclient.InferInput("prompt", [1], "FP32")
    fp32.set_data_from_numpy(np.array([1.0], dtype=np.float32))
    out["grpc_fp32_prompt"] = grpc_error(lambda: grpc.infer(args.model, [fp32], headers=grpc_headers))
    out["grpc_bad_parameter"] = grpc_error(
        lambda: grpc.infer(
            args.model,
            [prompt_input(grpcclient, args.prompt)],
            parameters={"num_inference_steps": 100000},
            headers=grpc_headers,
        )
    )
    out["grpc_reply_too_large"] = grpc_error(
        lambda: grpc.infer(
            args.model,
            [prompt_input(grpcclient, args.prompt)],
            parameters={"width": 1024, "height": 1024},
            headers=grpc_headers,
        )
    )
    out["grpc_request_too_large"] = grpc_error(
        lambda: grpc.infer(args.model, [prompt_input(grpcclient, "x" * 300_000)], headers=grpc_headers)
    )
    if args.token:
        out["grpc_no_token"] = grpc_error(lambda: grpc.get_model_metadata(args.model))
        out["grpc_no_token_live"] = grpc.is_server_live()
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    sys.exit(main())
