"""mpixfer: move registered memory between processes over MPI one-sided RMA.

The names and meanings are those of TensorRT-LLM's transfer-agent binding
(``tensorrt_llm_transfer_agent_binding``): code written against it switches to mpixfer by
changing the import and the backend name::

    import mpixfer as tab
    agent = tab.make_transfer_agent("mpixfer", tab.BaseAgentConfig(name="prefill"))

Added here: :class:`Context` over an mpi4py communicator (``bootstrap()``, arena buffers,
counters), descriptors from NumPy arrays and PyTorch tensors in one call
(:meth:`MemoryDescs.from_tensors`), :class:`MpixferError` carrying the status name,
context managers, and ``await status``.

Importing the package imports ``mpi4py.MPI``, which initialises MPI (at
``MPI_THREAD_MULTIPLE`` unless ``mpi4py.rc`` says otherwise). Agents created without
``context=`` share one process-wide context over ``MPI_COMM_SELF``. Every context still
alive at exit is destroyed before mpi4py finalises MPI.
"""

from mpi4py import MPI as _MPI  # noqa: F401  (first: initialises MPI)

import asyncio as _asyncio
import atexit as _atexit
import sys as _sys

from . import _mpixfer
from ._mpixfer import (  # noqa: F401
    AgentDesc,
    ArenaBuffer,
    BaseAgentConfig,
    BaseLoopbackAgent,
    BaseTransferAgent,
    Context,
    FileDesc,
    FileDescs,
    MemoryDesc,
    MemoryDescs,
    MemoryType,
    MpixferError,
    MpixferLoopbackAgent,
    MpixferTransferAgent,
    MpixferTransferStatus,
    TransferOp,
    TransferRequest,
    TransferState,
    TransferStatus,
    default_context,
    make_loopback_agent,
    make_transfer_agent,
    status_name,
    strerror,
)

__version__ = _mpixfer.version()

#: Which backends this module provides (TensorRT-LLM's binding exposes the same flags).
MPIXFER_ENABLED = True
NIXL_ENABLED = False
MOONCAKE_ENABLED = False

RegisterDescs = MemoryDescs
TransferDescs = MemoryDescs

__all__ = [
    "AgentDesc", "ArenaBuffer", "BaseAgentConfig", "BaseLoopbackAgent", "BaseTransferAgent",
    "Context", "FileDesc", "FileDescs", "MemoryDesc", "MemoryDescs", "MemoryType",
    "MpixferError", "MpixferLoopbackAgent", "MpixferTransferAgent", "MpixferTransferStatus",
    "TransferOp", "TransferRequest", "TransferState", "TransferStatus", "default_context",
    "make_loopback_agent", "make_transfer_agent", "status_name", "strerror",
]


# --------------------------------------------------------------- descriptors of objects

def _range_of(obj):
    """(MemoryType, addr, nbytes, device_id) of one contiguous tensor, array or buffer."""
    # A tensor exists only if PyTorch was imported: look it up, never import it (that
    # cost a NumPy-only caller 2-10 s on its first registration).
    torch = _sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        if not obj.is_contiguous():
            raise ValueError("MemoryDescs.from_tensors: the tensor is not contiguous")
        nbytes = obj.numel() * obj.element_size()
        if obj.device.type == "cuda":
            return MemoryType.VRAM, obj.data_ptr(), nbytes, obj.device.index or 0
        if obj.device.type != "cpu":
            raise ValueError(f"MemoryDescs.from_tensors: unsupported device {obj.device}")
        return MemoryType.DRAM, obj.data_ptr(), nbytes, 0
    cai = getattr(obj, "__cuda_array_interface__", None)
    if cai is not None:  # CuPy, Numba, ...: contiguous device arrays
        if cai.get("strides") is not None:
            raise ValueError("MemoryDescs.from_tensors: the device array is not contiguous")
        import numpy as np
        nbytes = int(np.prod(cai["shape"], dtype=np.int64)) * np.dtype(cai["typestr"]).itemsize
        dev = getattr(getattr(obj, "device", None), "id", 0) or 0
        return MemoryType.VRAM, cai["data"][0], nbytes, dev
    import numpy as np
    if not isinstance(obj, np.ndarray):
        obj = np.frombuffer(memoryview(obj).cast("B"), dtype=np.uint8)
    if not (obj.flags.c_contiguous or obj.flags.f_contiguous):
        raise ValueError("MemoryDescs.from_tensors: the array is not contiguous")
    return MemoryType.DRAM, obj.__array_interface__["data"][0], obj.nbytes, 0


def _from_tensors(objs, type=None):
    """MemoryDescs of NumPy arrays, PyTorch tensors (CPU or CUDA), objects with
    ``__cuda_array_interface__`` or buffers: one descriptor each, all of one memory type.

    ``objs`` is one such object or a sequence of them. ``type`` forces the memory type.
    """
    if not isinstance(objs, (list, tuple)):
        objs = [objs]
    kinds, items = set(), []
    for o in objs:
        kind, addr, nbytes, dev = _range_of(o)
        if nbytes == 0:
            raise ValueError("MemoryDescs.from_tensors: an object has no bytes")
        kinds.add(kind)
        items.append((addr, nbytes, dev))
    if type is None:
        if len(kinds) > 1:
            raise ValueError("MemoryDescs.from_tensors: host and device memory mixed")
        type = kinds.pop() if kinds else MemoryType.DRAM
    return MemoryDescs(type, items)


MemoryDescs.from_tensors = staticmethod(_from_tensors)


# ---------------------------------------------------------------------------- asyncio

def _set_result(fut, state):
    if not fut.done():  # the awaiting task may have been cancelled
        fut.set_result(state)


def _resolve(loop, fut, state):
    """Called by the module's notifier thread (GIL held) when an awaited request ends."""
    try:
        loop.call_soon_threadsafe(_set_result, fut, state)
    except RuntimeError:  # the loop is closed: nobody waits any more
        pass


_mpixfer._set_resolver(_resolve)


def _status_await(self):
    """``await status``: the final TransferState (SUCCESS or FAILURE).

    A finished request returns at once; otherwise a future of the running loop is completed
    from the module's notifier thread (``loop.call_soon_threadsafe``), so the event loop
    never polls. The first look reads the request's status without driving progress: a
    poll would issue a queued request's copies on the event loop's thread.
    """
    state = self._state()
    if state == TransferState.IN_PROGRESS:
        loop = _asyncio.get_running_loop()
        fut = loop.create_future()
        self._notify(loop, fut)
        state = yield from fut.__await__()
    return state


MpixferTransferStatus.__await__ = _status_await


# ---------------------------------------------------------------------------- teardown

# mpi4py finalises MPI through Py_AtExit, after every atexit handler: this runs first.
_atexit.register(_mpixfer._shutdown)
