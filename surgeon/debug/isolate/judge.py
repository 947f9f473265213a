"""The verdict of the targets that compare outputs (``passes``, ``onnxrt-optimizers``,
``cuda-options``): the candidate configuration runs every sample, and its outputs are
judged against the reference's.

Why a candidate that does not load or run fails: the configuration broke the model, which
is what isolate looks for. Why a backend that is not installed raises instead: no GPU (or
no library) is no verdict about the configuration.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

from surgeon.comparison import samples_match
from surgeon.debug.isolate.ddmin import Subset, Verdict
from surgeon.errors import BackendError, BackendUnavailableError

log = logging.getLogger(__name__)


def judge(subset: Subset, session: Callable[[], Any], samples: Sequence[Mapping[str, Any]],
          reference: Sequence[Mapping[str, Any]], *, atol: Any, rtol: Any, nan_equal: bool) -> Verdict:
    """FAIL when ``session()`` (the candidate for ``subset``) cannot load or run a sample, or when
    an output of a sample is beyond tolerance of ``reference``; PASS otherwise."""
    try:
        candidate = session()
        outputs = [candidate.run(f) for f in samples]
    except BackendUnavailableError:
        raise
    except BackendError as exc:
        log.info("candidate %s did not run: %s", subset, exc)
        return Verdict.FAIL
    matches = samples_match(reference, outputs, atol=atol, rtol=rtol, nan_equal=nan_equal)
    return Verdict.PASS if matches else Verdict.FAIL
