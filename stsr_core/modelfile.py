"""The model file: one torch file (``.stsr``, any name works) holding everything needed to
answer queries without the original data.

Layout (a plain dict, loaded with ``torch.load(weights_only=True)`` so that opening a model
file never runs code):

    format: "stsr-inr-model"     version: FORMAT_VERSION (int)
    model_config: dict (kind + fields of the model's config dataclass)
    train_config: dict
    state_dict: the network's tensors (latent codes included, as ``latent_mu``)
    info: dict -- variables, components, normalisation stats (lo/hi per variable),
          dims, origin, spacing, times, heads, preset, training history
    step: int

The optimiser state that ``--resume`` needs lives in a file beside it, ``MODEL.resume``
(:func:`resume_path`; format "stsr-inr-resume", the model's step count, the state), so the
model file holds the model alone. Models without trainable weights (the fast preset's base)
have none.

Writes go to a temporary file in the target folder and are renamed over the target, so an
interrupted save never leaves a half-written model behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
import zipfile
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .errors import StsrError
from .files import apply_umask, write_error
from .model.slots import FileSlots

FORMAT_NAME = "stsr-inr-model"
FORMAT_VERSION = 4   # 2: fast models gained the spline base; 3: its time interpolation;
                     # 4: the base in its own module, the optimiser state in a file beside
READ_VERSIONS = (3, 4)
RESUME_FORMAT = "stsr-inr-resume"


def resume_path(path: str) -> str:
    """Where the optimiser state of the model file ``path`` is kept."""
    return path + ".resume"


class _WriteErrors:
    """A file object for ``torch.save`` that keeps the first OSError its writes raised:
    torch reports a failed write (a full disk) as a RuntimeError about stream positions."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.error: Optional[OSError] = None

    def write(self, data: Any) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def write_atomic(path: str, payload: Dict[str, Any]) -> None:
    """Write ``payload`` to a temporary file beside ``path`` and rename it over ``path``:
    whatever fails (a full disk included) leaves ``path`` as it was and no temporary file."""
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise StsrError(f"cannot write model '{path}': folder '{folder}' does not exist")
    kept = ("it keeps its previous contents" if os.path.exists(path) else
            "nothing was written") + " and no partial file is left"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".stsr", dir=folder)
    except OSError as exc:
        raise write_error(f"'{path}'", exc, kept) from None
    recorder = None
    try:
        with os.fdopen(fd, "wb") as f:
            recorder = _WriteErrors(f)
            torch.save(_in_memory(payload), recorder)
            f.flush()
            os.fsync(f.fileno())
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(f"'{path}'", exc, kept) from None
        if recorder is not None and recorder.error is not None:
            raise write_error(f"'{path}'", recorder.error, kept) from None
        raise


def to_bytes(payload: Dict[str, Any]) -> bytes:
    """A payload as the bytes its model file would hold (to send a model to other
    processes without a shared file system)."""
    buf = io.BytesIO()
    torch.save(_in_memory(payload), buf)
    return buf.getvalue()


def _in_memory(payload: Dict[str, Any]) -> Dict[str, Any]:
    """``payload`` with weights kept in a file (:class:`FileSlots`) read into memory, as
    ``torch.save`` needs them."""
    sd = payload.get("state_dict")
    if not isinstance(sd, dict) or not any(isinstance(v, FileSlots) for v in sd.values()):
        return payload
    return {**payload, "state_dict": {k: v.whole() if isinstance(v, FileSlots) else v
                                      for k, v in sd.items()}}


def read(path: str, data: Optional[bytes] = None, lazy: Sequence[str] = ()) -> Dict[str, Any]:
    """The payload of model file ``path``, or of the bytes ``data`` a model file held
    (``path`` then only names it in messages), checked. The weights named in ``lazy`` (of
    a file, when stored as one contiguous float32 [T, ...] block) are not read but given as
    :class:`FileSlots` reading the file a slot at a time; every byte is still checked
    against the checksum, a few MB at a time."""
    if data is None and not os.path.exists(path):
        raise StsrError(f"model file '{path}' does not exist")
    if data is None and os.path.isdir(path):
        raise StsrError(f"model file '{path}' is a folder, not a file")
    payload = None
    if data is None and lazy:
        try:
            payload = _read_lazily(path, lazy)
        except Exception:  # noqa: BLE001 - read it whole instead (that says what is wrong)
            payload = None
    if payload is None:
        try:
            payload = torch.load(path if data is None else io.BytesIO(data),
                                 map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for damaged files
            raise StsrError(f"'{path}' is damaged or not an stsr model file (it cannot be "
                            f"read as one: {type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise StsrError(f"'{path}' is not an stsr model file")
    version = payload.get("version")
    if version not in READ_VERSIONS:
        raise StsrError(
            f"model file '{path}' has format version {version}; this stsr reads versions "
            f"{', '.join(map(str, READ_VERSIONS))} (retrain, or use the stsr version that "
            "wrote it)"
        )
    for key in ("model_config", "train_config", "state_dict", "info"):
        if key not in payload:
            raise StsrError(f"model file '{path}' is incomplete: no '{key}'")
        if not isinstance(payload[key], dict):
            raise StsrError(f"model file '{path}' is inconsistent: its '{key}' is a "
                            f"{type(payload[key]).__name__}, not a table")
    if not all(isinstance(k, str) and isinstance(v, (torch.Tensor, FileSlots))
               for k, v in payload["state_dict"].items()):
        raise StsrError(f"model file '{path}' is inconsistent: its weights are not all "
                        "named tensors")
    digest, not_finite = _digest(payload)
    bad = [k for k, t in payload["state_dict"].items() if k in not_finite]
    if bad:                   # a diverged fit is never saved: this file was made otherwise
        raise StsrError(f"model file '{path}' is inconsistent: its weights {bad[:3]} hold "
                        "NaN/Inf values")
    step = payload.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise StsrError(f"model file '{path}' is inconsistent: its step count is {step!r}, "
                        "not a whole number")
    if "checksum" in payload and payload["checksum"] != digest:
        raise StsrError(f"model file '{path}' is damaged: its contents do not match the "
                        "checksum written with them (changed or corrupted since it was "
                        "saved); use a copy or fit anew")
    return payload


def checksum(payload: Dict[str, Any]) -> str:
    """SHA-256 of a payload's weights (their bytes, in name order) and of everything else
    but the checksum itself (as sorted JSON): written with the model, checked on load."""
    return _digest(payload)[0]


def _digest(payload: Dict[str, Any]) -> Tuple[str, List[str]]:
    """:func:`checksum`, and the floating-point weights holding NaN/Inf (found in the same
    pass over their bytes: a file's slots are read once)."""
    h = hashlib.sha256()
    bad: List[str] = []
    for name in sorted(payload["state_dict"]):
        t = payload["state_dict"][name]
        h.update(name.encode())
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        if isinstance(t, FileSlots):
            finite = True
            for chunk in t.chunks():
                h.update(chunk.view(np.uint8))
                finite = finite and bool(np.isfinite(chunk).all())
            if not finite:
                bad.append(name)
            continue
        t = t.detach().cpu().contiguous()
        flat = t.reshape(-1)                 # a 0-d tensor's bytes too (same bytes otherwise)
        h.update(flat.view(torch.uint8).numpy() if t.numel() else b"")
        if t.is_floating_point() and not _finite(t):
            bad.append(name)
    rest = {k: v for k, v in payload.items() if k not in ("state_dict", "checksum")}
    h.update(json.dumps(rest, sort_keys=True, default=str).encode())
    return h.hexdigest(), bad


def _finite(t: torch.Tensor) -> bool:
    """Whether a floating-point tensor holds no NaN/Inf: numpy's isfinite for float32/64
    (7.5 M float32 in 5 ms against torch's 40 ms on the 2-core VM, the tornado model's
    load 0.13 -> 0.07 s), torch's for the others (float16, bfloat16)."""
    if t.dtype in (torch.float32, torch.float64):
        return bool(np.isfinite(t.numpy()).all())
    return bool(torch.isfinite(t).all())


def _read_lazily(path: str, lazy: Sequence[str]) -> Dict[str, Any]:
    """The payload of a model file with the weights named in ``lazy`` left in the file
    (:class:`FileSlots`) and every other tensor read: ``torch.load`` onto the meta device
    says where each tensor's bytes are, which are then read at those offsets."""
    with zipfile.ZipFile(path) as z:            # the byte order the tensors were saved in
        order = [z.read(n) for n in z.namelist() if n.endswith("/byteorder")]
    if order and order[0].decode() != sys.byteorder:
        raise ValueError("another byte order")
    meta = torch.load(path, map_location="meta", weights_only=True)
    read: Dict[int, torch.UntypedStorage] = {}

    with open(path, "rb") as fh:
        def real(t: torch.Tensor) -> torch.Tensor:
            st = t.untyped_storage()
            at, nbytes = int(st._checkpoint_offset), st.nbytes()
            if nbytes == 0:
                return torch.empty(t.shape, dtype=t.dtype)
            if at not in read:
                buf = bytearray(nbytes)
                fh.seek(at)
                if fh.readinto(buf) != nbytes:
                    raise ValueError("truncated")
                read[at] = torch.frombuffer(buf, dtype=torch.uint8).untyped_storage()
            return torch.empty(0, dtype=t.dtype).set_(read[at], t.storage_offset(), t.shape,
                                                      t.stride())

        def walk(obj: Any, name: str = "") -> Any:
            if isinstance(obj, torch.Tensor):
                if name in lazy and obj.dtype == torch.float32 and obj.dim() >= 2 and \
                        obj.is_contiguous() and obj.numel():
                    at = int(obj.untyped_storage()._checkpoint_offset)
                    return FileSlots.open(path, at + 4 * obj.storage_offset(), obj.shape)
                return real(obj)
            if isinstance(obj, dict):
                return {k: walk(v, k if obj is sd else "") for k, v in obj.items()}
            if isinstance(obj, (list, tuple)):
                return type(obj)(walk(v) for v in obj)
            return obj

        sd = meta.get("state_dict") if isinstance(meta, dict) else None
        return walk(meta)


def read_resume_state(path: str, step: int) -> Optional[Dict[str, Any]]:
    """The optimiser state saved beside model file ``path`` when it belongs to the model's
    ``step`` (a stale or unreadable one is ignored: resuming then starts Adam afresh)."""
    side = resume_path(path)
    if not os.path.isfile(side):
        return None
    try:
        payload = torch.load(side, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - damaged: the model itself is still fine
        return None
    if not isinstance(payload, dict) or payload.get("format") != RESUME_FORMAT \
            or payload.get("step") != step:
        return None
    return payload.get("optimizer")


def lock_path(path: str) -> str:
    """The lock that marks model file ``path`` as being written by a running fit."""
    return path + ".lock"


@contextlib.contextmanager
def writing_lock(path: str, steal: bool = False) -> Iterator[None]:
    """Hold ``MODEL.lock`` (the writer's process id) while a fit writes ``path``: a second
    fit to the same file is refused while the first runs, unless ``steal`` (--overwrite).
    A lock whose process is gone is taken over."""
    lock = lock_path(os.path.abspath(path))
    os.makedirs(os.path.dirname(lock), exist_ok=True)     # as the fit's output check would
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            break
        except FileExistsError:
            pid = _lock_owner(lock)
            if pid is not None and pid != os.getpid() and _alive(pid) and not steal:
                raise StsrError(f"another stsr fit (process {pid}) is writing '{path}' "
                                f"(lock '{lock}'); wait for it, or pass --overwrite to "
                                "replace its result") from None
            try:
                os.unlink(lock)
            except FileNotFoundError:
                pass
    else:
        raise StsrError(f"cannot take the lock '{lock}' of '{path}'")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
    except OSError as exc:
        os.unlink(lock)
        raise StsrError(f"cannot create the lock '{lock}' of '{path}': "
                        f"{exc.strerror or exc}") from None
    try:
        yield
    finally:
        if _lock_owner(lock) == os.getpid():
            os.unlink(lock)


def _lock_owner(lock: str) -> Optional[int]:
    try:
        with open(lock) as fh:
            return int(fh.read().strip() or "0") or None
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:        # someone else's process: alive
        return True
    return True
