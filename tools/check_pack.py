#!/usr/bin/env python3
"""Cross-check a Pleura model pack with the ONNX reference tools (a measuring peer, not part of
the product): every model passes `onnx.checker` (full check), runs in onnxruntime, and the
shared path (backbone -> head) gives probabilities in [0, 1] for each task.

Usage: python3 tools/check_pack.py models/default     (needs: pip install onnx onnxruntime numpy)
"""
import json
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main(pack: pathlib.Path) -> int:
    manifest = json.loads((pack / "manifest.json").read_text())
    inp = manifest["input"]
    files = [manifest["backbone"]["file"]]
    for task in manifest["tasks"]:
        files += [task["head"]["file"], task["serial_network"]["file"]]
    for f in files:
        onnx.checker.check_model(onnx.load(pack / f), full_check=True)
        print(f"{f}: onnx.checker ok")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, inp["channels"], inp["height"], inp["width"])).astype(np.float32)
    backbone = ort.InferenceSession(str(pack / manifest["backbone"]["file"]))
    features = backbone.run(None, {"image": x})[0]
    assert features.shape == (2, manifest["backbone"]["feature_dim"]), features.shape
    for task in manifest["tasks"]:
        head = ort.InferenceSession(str(pack / task["head"]["file"]))
        p = head.run(None, {"features": features})[0]
        net = ort.InferenceSession(str(pack / task["serial_network"]["file"]))
        q = net.run(None, {"image": x})[0]
        assert p.shape == q.shape == (2, 1) and np.all((0 <= p) & (p <= 1)), (p, q)
        print(f"{task['name']}: onnxruntime shared {p.ravel()} serial {q.ravel()}")
    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}: {len(files)} models ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "models/default")))
