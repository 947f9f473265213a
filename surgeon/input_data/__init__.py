"""Input data for running models: specs, seeded samples of every ONNX type, fit checks.

Verification and every debug tool feed models through here, so a given seed gives the
same data everywhere. One module per job:

- :mod:`.specs`: what the model takes (:class:`InputSpec` per input, dynamic-dim symbols),
  and checks of pinned shapes and ``--val-range`` names against it. Dynamic dimensions
  are resolved per *symbol*: dims that share a ``dim_param`` get the same size; each
  unnamed dim (``?``, ``-1``, empty) is its own symbol.
- :mod:`.values`: seeded values for every input type ONNX Runtime takes: tensors of every
  element type (bfloat16, float8, int4/uint4 as ``ml_dtypes`` arrays, strings as object
  arrays), sequences (lists), optionals (the value, or ``None``) and maps (dicts); image-like
  content for image inputs. Integer inputs get values the graph can run on:
  :mod:`surgeon.input_ranges` infers them from how the graph uses each input (indices,
  axes, shapes, counts), and says why when it cannot.
- :mod:`.sizes`: the sizes samples are made at (a ladder for dynamic dims, the dims the
  weights fix, a realistic image size).
- :mod:`.samples`: the sample makers, :func:`make_samples` (debug tools) and
  :func:`verification_samples` (the pipeline's proof).
- :mod:`.exercise`: other samples when the default ones give a reference that is no evidence.
- :mod:`.feed_check`: :func:`check_feeds` checks loaded samples against the model (names,
  kinds, dtypes, ranks, static dims, integer ranges, and optionally one run), so that a
  file that does not fit is a usage error naming the input, not a silent unverified result.
"""

from surgeon.input_data.exercise import Exercised, Variant, exercise, variants
from surgeon.input_data.feed_check import check_feeds
from surgeon.input_data.samples import input_problems, make_samples, runs_on, verification_samples
from surgeon.input_data.sizes import fixed_sizes, graph_sizes, size_attempts
from surgeon.input_data.specs import (
    SEQUENCE_LENGTH, InputSpec, check_pins, check_value_ranges, concrete_shape, image_layout, input_specs,
    is_float_dtype, is_integer_dtype, spec_from_type, symbols,
)
from surgeon.input_data.values import describe_feeds, image_array, mask_array, random_array, random_value

__all__ = [
    "SEQUENCE_LENGTH", "Exercised", "InputSpec", "Variant", "check_feeds", "check_pins", "check_value_ranges",
    "concrete_shape", "describe_feeds", "exercise", "fixed_sizes", "graph_sizes", "image_array", "image_layout",
    "input_problems", "input_specs", "is_float_dtype", "is_integer_dtype", "make_samples", "mask_array",
    "random_array", "random_value", "runs_on", "size_attempts", "spec_from_type", "symbols", "variants",
    "verification_samples",
]
