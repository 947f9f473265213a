"""Reading ONNX Runtime's profiler trace (``SessionOptions.enable_profiling``).

The trace is a Chrome-tracing JSON list of complete events (``"ph": "X"``, ``ts`` and
``dur`` in microseconds). What this module relies on, as ONNX Runtime writes it (checked
on 1.17+ and 1.32 here):

- one ``{"cat": "Session", "name": "model_run"}`` event per ``InferenceSession.run``;
  kernel events of that run lie inside its time window;
- one ``{"cat": "Node", "name": "<node name>_kernel_time"}`` event per kernel executed,
  with ``args.op_name`` (the kernel's op type after ORT's fusions, e.g. ``FusedConv``),
  ``args.provider`` and ``args.node_index``. Unnamed nodes appear as ``<op>_<index>``;
- kernels inside If/Loop/Scan bodies get their own events, nested in time inside the
  event of the control-flow node that ran them (which is logged after them);
- newer versions add the CPU allocator's statistics to each kernel's args
  (``mem_in_use_peak``, ``mem_arena_held``); older ones do not, and then no memory
  figure is given;
- builds with CUDA profiling (CUPTI; ``onnxruntime_ENABLE_CUDA_PROFILING``) add one
  ``{"cat": "Kernel"}`` event per GPU kernel (and copy) a node launched, placed right after
  that node's event in the list, its ``dur`` the time the GPU spent in it and its ``ts``
  rewritten to just after the node's (``GPUProfilerBase::MergeEvents``). They are summed per
  node (``gpu_us``, ``gpu_kernels``); builds without CUPTI have none, and then a CUDA node's
  own ``dur`` is the time its launch took, not its execution (see profile/cuda.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from surgeon.errors import InputDataError

KERNEL_SUFFIX = "_kernel_time"
MEMORY_KEYS = ("mem_in_use_peak", "mem_arena_held")


@dataclass
class KernelEvent:
    name: str  # node name as the trace gives it (without the "_kernel_time" suffix)
    op_type: str
    provider: str | None
    node_index: int | None
    ts: int
    dur: int
    parent: str | None = None  # the enclosing control-flow kernel, when this ran inside a body
    gpu_us: int = 0  # summed "Kernel" events (GPU time) this node launched, in CUPTI builds
    gpu_kernels: int = 0


@dataclass
class Run:
    """One ``InferenceSession.run``: its duration and the kernels it executed."""

    dur_us: int
    kernels: list[KernelEvent] = field(default_factory=list)


@dataclass
class Trace:
    runs: list[Run]
    memory: dict[str, int] | None  # max over the trace of each MEMORY_KEYS value, when present


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _inside(k: KernelEvent, p: KernelEvent) -> bool:
    """Whether ``k`` ran during ``p``. ORT truncates ``ts`` and ``dur`` separately to whole
    microseconds, so a child can seem to end 1 us after its parent; a sibling never starts
    before the previous kernel's truncated end."""
    end = p.ts + p.dur
    return p.ts <= k.ts < end and k.ts + k.dur <= end + 1


def _nest(kernels: list[KernelEvent]) -> None:
    """Set ``parent`` for kernels that ran inside a control-flow kernel's body."""
    # Outer events first: earlier start, then longer; children are logged before their
    # parent, so for identical intervals the later-logged event is the parent.
    order = sorted(range(len(kernels)), key=lambda i: (kernels[i].ts, -kernels[i].dur, -i))
    stack: list[KernelEvent] = []
    for i in order:
        k = kernels[i]
        while stack and not _inside(k, stack[-1]):
            stack.pop()
        if stack:
            k.parent = stack[-1].name
        stack.append(k)


def has_gpu_kernels(events: Sequence[Any]) -> bool:
    """Whether the trace carries CUPTI's per-kernel GPU times (a build with CUDA profiling)."""
    return any(isinstance(e, dict) and e.get("cat") == "Kernel" for e in events)


def _gpu_time_per_node(events: Sequence[Any]) -> dict[int, tuple[int, int]]:
    """id(node event) -> (summed GPU microseconds, kernel count): each "Kernel" event belongs to
    the last node event before it in the list (fence events skipped)."""
    out: dict[int, tuple[int, int]] = {}
    last = None
    for e in events:
        cat = e.get("cat")
        if cat == "Node" and str(e.get("name", "")).endswith(KERNEL_SUFFIX):
            last = e
        elif cat == "Kernel" and last is not None:
            us, n = out.get(id(last), (0, 0))
            out[id(last)] = (us + int(e.get("dur", 0) or 0), n + 1)
    return out


def parse_trace(events: Sequence[Any], what: str = "the ONNX Runtime profile") -> Trace:
    """Runs (in order) with their kernels; raises InputDataError when this is not ORT's trace."""
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise InputDataError(f"{what} is not an ONNX Runtime profiler trace (expected a JSON list of events)")
    windows = [(e.get("ts", 0), e.get("ts", 0) + e.get("dur", 0), e.get("dur", 0))
               for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if not windows:
        raise InputDataError(f"{what} has no 'model_run' events: the session was profiled but never run")
    windows.sort()
    runs = [Run(int(dur)) for _, _, dur in windows]
    memory: dict[str, int] = {}
    gpu = _gpu_time_per_node(events)
    nodes = [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith(KERNEL_SUFFIX)]
    nodes.sort(key=lambda e: e.get("ts", 0))
    w = 0
    for e in nodes:
        ts, dur = int(e.get("ts", 0)), int(e.get("dur", 0))
        while w < len(windows) and ts > windows[w][1]:
            w += 1
        if w == len(windows):
            break
        if ts < windows[w][0]:
            continue  # a kernel outside any run (session initialization); not part of a run
        args = e.get("args") or {}
        for key in MEMORY_KEYS:
            v = _int(args.get(key))
            if v is not None:
                memory[key] = max(memory.get(key, 0), v)
        runs[w].kernels.append(KernelEvent(
            name=str(e["name"])[: -len(KERNEL_SUFFIX)], op_type=str(args.get("op_name", "?")),
            provider=args.get("provider"), node_index=_int(args.get("node_index")), ts=ts, dur=dur,
            gpu_us=gpu.get(id(e), (0, 0))[0], gpu_kernels=gpu.get(id(e), (0, 0))[1]))
    for run in runs:
        _nest(run.kernels)
    return Trace(runs, memory or None)
