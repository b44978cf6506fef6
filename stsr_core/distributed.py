"""Several processes, one job: the ranks a launcher started (``torchrun``, ``srun``,
``mpiexec``) joined in one ``torch.distributed`` group, so that ``stsr fit`` and
``stsr upscale`` share their work. No process pool or socket protocol of our own: the
launcher starts the processes, torch's gloo (CPU) or NCCL (CUDA) backend carries the data.

Everything here also works in a single process (no launcher, or ``WORLD_SIZE=1``): rank 0
of 1, collectives that return their input. The engine asks :func:`rank` /
:func:`world_size` and calls the helpers; it never needs to know whether a group exists.

A rank that dies or hangs must not leave the others waiting forever: every collective has
the group's timeout (:class:`DistConfig`), and a failed one becomes a
:class:`~stsr_core.errors.StsrError` that says which rank and what to check.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, TypeVar

import torch
import torch.distributed as dist

from .errors import StsrError

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 600.0       # a rank that stops answering for this long is taken as dead
TIMEOUT_ENV = "STSR_DIST_TIMEOUT"   # seconds; overrides DistConfig.timeout_s
DEFAULT_PORT = 29500            # MASTER_PORT when a launcher other than torchrun sets none


@dataclass(frozen=True)
class LaunchEnv:
    """Where this process stands in its job, as its launcher described it.

    Attributes:
        rank: this process, 0 .. world_size - 1.
        world_size: processes in the job.
        local_rank: this process among those on its machine (picks its GPU).
        master_addr, master_port: where rank 0 listens for the others to join.
        launcher: "torchrun", "slurm", "openmpi", "pmi" or "single".
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_PORT
    launcher: str = "single"


@dataclass
class DistConfig:
    """How the group is made.

    Attributes:
        backend: "gloo", "nccl" or None (None: NCCL when the device is CUDA, else gloo).
        timeout_s: seconds a collective may wait for the other ranks (joining included)
            before it fails with an error naming the rank (the environment variable
            STSR_DIST_TIMEOUT overrides it: small in tests, long where ranks are slow).
    """

    backend: Optional[str] = None
    timeout_s: float = DEFAULT_TIMEOUT_S


def _int(env: Mapping[str, str], *names: str) -> Optional[int]:
    for n in names:
        v = env.get(n)
        if v not in (None, ""):
            try:
                return int(str(v).split(",")[0])
            except ValueError:
                raise StsrError(f"environment variable {n}={v!r} is not an integer") from None
    return None


def detect(env: Optional[Mapping[str, str]] = None) -> LaunchEnv:
    """This process's place in its job from the launcher's environment: torchrun's RANK /
    WORLD_SIZE / LOCAL_RANK first, then Open MPI's (mpiexec) OMPI_COMM_WORLD_*, Slurm's
    (srun) SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID and MPICH's PMI_RANK / PMI_SIZE.
    MASTER_ADDR / MASTER_PORT say where rank 0 listens (torchrun sets them; with the other
    launchers set them for a job over several machines: 127.0.0.1:29500 otherwise)."""
    env = os.environ if env is None else env
    found = None
    for launcher, rank_v, size_v, local_v in (
            ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
            ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
             "OMPI_COMM_WORLD_LOCAL_RANK"),
            ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
            ("pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID")):
        rank, size = _int(env, rank_v), _int(env, size_v)
        if rank is not None and size is not None:
            found = (launcher, rank, size, _int(env, local_v))
            break
    if found is None:
        return LaunchEnv()
    launcher, rank, size, local = found
    if size < 1 or not 0 <= rank < size:
        raise StsrError(f"the launcher ({launcher}) gave rank {rank} of {size} processes")
    if launcher == "slurm" and size > 1 and (_int(env, "SLURM_NNODES") or 1) > 1 \
            and not env.get("MASTER_ADDR"):
        raise StsrError("srun over several nodes: set MASTER_ADDR to the first node's host "
                        "name (e.g. export MASTER_ADDR=$(scontrol show hostnames "
                        "\"$SLURM_JOB_NODELIST\" | head -n 1)) so the ranks can meet")
    port = _int(env, "MASTER_PORT")
    return LaunchEnv(rank=rank, world_size=size, local_rank=local if local is not None else 0,
                     master_addr=env.get("MASTER_ADDR") or "127.0.0.1",
                     master_port=port if port is not None else DEFAULT_PORT,
                     launcher=launcher)


# --- the group -----------------------------------------------------------------------------
_timeout_s: float = DEFAULT_TIMEOUT_S
_device: torch.device = torch.device("cpu")   # where collectives' tensors live (NCCL: GPU)


def active() -> bool:
    """Whether this process is one of several in a group (not merely started by a launcher
    of one)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the one that writes model files, the .pvd, and prints."""
    return rank() == 0


def timeout_s() -> float:
    return _timeout_s


def device_for(name: str, launch: LaunchEnv) -> str:
    """The device of this rank: with CUDA ("auto" or "cuda") its own GPU, ``cuda:LOCAL_RANK``
    (torchrun starts one process per GPU); an explicit ``cuda:N`` or "cpu" as given."""
    name = (name or "auto").lower()
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{launch.local_rank % max(1, torch.cuda.device_count())}"
    return "cpu" if name == "auto" else name


def init(device: str = "cpu", config: Optional[DistConfig] = None,
         launch: Optional[LaunchEnv] = None) -> LaunchEnv:
    """Join this process's group (described by ``launch``, else :func:`detect`): NCCL for a
    CUDA ``device``, gloo otherwise, every wait bounded by the timeout. A job of one process
    makes no group. Returns where this process stands."""
    global _timeout_s, _device
    config = config or DistConfig()
    launch = launch or detect()
    try:
        _timeout_s = float(os.environ.get(TIMEOUT_ENV) or config.timeout_s)
    except ValueError:
        raise StsrError(f"{TIMEOUT_ENV}={os.environ.get(TIMEOUT_ENV)!r} is not a number of "
                        "seconds") from None
    if _timeout_s <= 0:
        raise StsrError(f"{TIMEOUT_ENV} must be > 0 seconds, got {_timeout_s:g}")
    if launch.world_size <= 1 or active():
        return launch
    dev = torch.device(device)
    backend = config.backend or ("nccl" if dev.type == "cuda" else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(dev)
        _device = dev
    else:
        _device = torch.device("cpu")
    try:
        dist.init_process_group(
            backend, init_method=f"tcp://{launch.master_addr}:{launch.master_port}",
            rank=launch.rank, world_size=launch.world_size,
            timeout=datetime.timedelta(seconds=_timeout_s))
    except Exception as exc:  # noqa: BLE001 - torch raises several types here
        raise StsrError(
            f"rank {launch.rank} of {launch.world_size} could not join the others at "
            f"{launch.master_addr}:{launch.master_port} within {_timeout_s:g} s "
            f"({type(exc).__name__}: {_first_line(exc)}); check that every rank was started, "
            "MASTER_ADDR/MASTER_PORT reach rank 0 and the port is free") from None
    return launch


def shutdown() -> None:
    """Leave the group (a no-op without one); safe to call twice."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        dist.destroy_process_group()
    except Exception as exc:  # noqa: BLE001 - leaving must not hide the command's result
        # a group left undestroyed can abort the process at its exit ("terminate called
        # without an active exception": gloo's threads outlive the interpreter): say why
        print(f"stsr: note: rank {rank()} could not leave the process group cleanly "
              f"({type(exc).__name__}: {_first_line(exc)})", file=sys.stderr)


@contextlib.contextmanager
def session(device: str = "cpu", config: Optional[DistConfig] = None,
            launch: Optional[LaunchEnv] = None) -> Iterator[LaunchEnv]:
    """:func:`init` ... :func:`shutdown`, also when the body fails."""
    try:
        yield init(device, config, launch)
    finally:
        shutdown()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def is_comm_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the group's transport (a rank died, hung or cut off)
    rather than from the computation."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(w in text for w in (
        "gloo", "nccl", "connection", "timed out", "timeout", "peer", "socket", "broken pipe"))


def lost_contact(exc: BaseException, what: str) -> StsrError:
    """The error a rank reports when a collective fails."""
    return StsrError(
        f"rank {rank()} of {world_size()}: {what} failed: another rank died or stopped "
        f"answering (timeout {_timeout_s:g} s, {TIMEOUT_ENV}) [{_first_line(exc)}]; see the "
        "other ranks' errors")


@contextlib.contextmanager
def collective(what: str) -> Iterator[None]:
    """Turn a transport failure inside the block into :func:`lost_contact`'s error."""
    try:
        yield
    except StsrError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch's transports raise several types
        if active() and is_comm_error(exc):
            raise lost_contact(exc, what) from None
        raise


# --- collectives ---------------------------------------------------------------------------
def barrier(what: str = "waiting for the other ranks") -> None:
    if not active():
        return
    with collective(what):
        # a gloo barrier ignores the group's timeout on some versions: an all-reduce has it
        t = torch.zeros(1, device=_device)
        dist.all_reduce(t)


def all_gather_objects(obj: Any, what: str = "exchanging results") -> List[Any]:
    """Every rank's ``obj`` (picklable; tensors on the CPU), in rank order."""
    if not active():
        return [obj]
    out: List[Any] = [None] * world_size()
    with collective(what):
        dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0, what: str = "receiving from rank 0") -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj if rank() == src else None]
    with collective(what):
        dist.broadcast_object_list(box, src=src)
    return box[0]


def any_rank(flag: bool, what: str = "agreeing to stop") -> bool:
    """True on every rank when ``flag`` is True on any (so that all stop at the same step)."""
    if not active():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=_device)
    with collective(what):
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_over_ranks(values: torch.Tensor, what: str = "averaging") -> torch.Tensor:
    """The element-wise mean of ``values`` over the ranks (a copy; the input unchanged)."""
    if not active():
        return values.clone()
    t = values.detach().to(_device, torch.float64).clone()
    with collective(what):
        dist.all_reduce(t)
    return (t / world_size()).to(values.device)


def together(fn: Callable[[], T], what: str) -> T:
    """Run ``fn`` on every rank and fail on every rank when it failed on any (with that
    rank's message), so that a check one rank fails (a file it cannot write, a lock it
    cannot take) does not leave the others waiting for it."""
    error: Optional[str] = None
    result: Any = None
    try:
        result = fn()
    except StsrError as exc:
        error = str(exc)
    errors = all_gather_objects(error, what)
    for r, e in enumerate(errors):
        if e is not None:
            raise StsrError(e if r == rank() or world_size() == 1 else f"(rank {r}) {e}")
    return result


# --- sharing work ---------------------------------------------------------------------------
def share(n: int, r: Optional[int] = None, size: Optional[int] = None) -> List[int]:
    """The items of ``range(n)`` rank ``r`` (this one) does: round-robin, so that items of
    different cost (early and late steps, intervals) spread evenly."""
    r = rank() if r is None else r
    size = world_size() if size is None else size
    return list(range(r, n, size))


def share_count(total: int, r: Optional[int] = None, size: Optional[int] = None) -> int:
    """This rank's part of ``total`` samples: equal parts, the remainder to the first ranks."""
    r = rank() if r is None else r
    size = world_size() if size is None else size
    return total // size + (1 if r < total % size else 0)


def gather_shares(local: Dict[int, Optional[torch.Tensor]], n: int,
                  what: str = "gathering the base's fits") -> List[Optional[torch.Tensor]]:
    """All ``n`` results on every rank from each rank's own ``local`` ones (its
    :func:`share`, by index; None: nothing to give). Tensors travel through the CPU and back
    to their device exactly (their bytes are pickled)."""
    if not active():
        return [local.get(i) for i in range(n)]
    dev = next((v.device for v in local.values() if v is not None), _device)
    parts = all_gather_objects({i: (None if v is None else v.detach().cpu())
                                for i, v in local.items()}, what)
    out: List[Optional[torch.Tensor]] = [None] * n
    for part in parts:
        for i, v in part.items():
            out[i] = local[i] if i in local else (None if v is None else v.to(dev))
    return out
