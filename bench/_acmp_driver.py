"""The user's script for onnxconverter-common's ``auto_convert_mixed_precision`` (it has no CLI).

``python bench/_acmp_driver.py MODEL INPUTS.json OUT.onnx ATOL RTOL``: the first input sample
(the function takes one feed dict), a validation function with surgeon's rule
(``|test - ref| <= atol + rtol*|ref|``, NaN matching NaN), ``keep_io_types=True``.
"""

import sys

import numpy as np
import onnx
from onnxconverter_common.auto_mixed_precision import auto_convert_mixed_precision
from polygraphy.json import load_json


def main() -> None:
    model_path, inputs_path, out_path, atol, rtol = sys.argv[1:6]
    atol, rtol = float(atol), float(rtol)
    feeds = load_json(inputs_path)[0]

    def validate(ref, test):
        for r, t in zip(ref, test):
            r, t = np.asarray(r, np.float64), np.asarray(t, np.float64)
            if r.shape != t.shape:
                return False
            both_nan = np.isnan(r) & np.isnan(t)
            with np.errstate(invalid="ignore"):
                ok = (np.abs(t - r) <= atol + rtol * np.abs(r)) | both_nan | ((r == t) & np.isinf(r))
            if not ok.all():
                return False
        return True

    model = auto_convert_mixed_precision(onnx.load(model_path), dict(feeds), validate_fn=validate, keep_io_types=True)
    onnx.save(model, out_path)


if __name__ == "__main__":
    main()
