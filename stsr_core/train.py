"""The training loop: random coordinate batches drawn on the device, all variables and all
heads per batch, MSE + the variational auto-decoder's KL term + the model's regulariser.

Everything is vectorised on tensors: a batch is B random (block-local point, timestep)
pairs; each yields one target per head and per variable, gathered with one flat index.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

from . import distributed
from .blocks import BlockLayout
from .config import TrainConfig
from .errors import StsrError
from .model import FieldModel


@dataclass
class TrainProgress:
    """What a progress callback receives. ``fraction`` is the share of the budget used (steps
    or time, whichever is further along); ``loss`` is the reconstruction MSE of the current
    batch of kept data in normalised units (range 2, without the KL and regularisation terms,
    which are constant-dominated) and ``psnr`` the same as a PSNR."""

    step: int
    total_steps: Optional[int]
    elapsed_s: float
    max_seconds: Optional[float]
    loss: float
    psnr: float
    fraction: float
    trained: Optional[object] = None   # the TrainedModel being trained (set by api.fit)
    # "init" while the model is fitted to the data before the first step (the fast base's
    # displacement fits: seconds to minutes), with ``init_fraction`` of that done; "train" after
    phase: str = "train"
    init_fraction: float = 1.0


ProgressCallback = Callable[[TrainProgress], Optional[bool]]


def budget_seconds(cfg: TrainConfig) -> Optional[float]:
    """The time budget in seconds (None: no time limit)."""
    return None if cfg.max_minutes is None else float(cfg.max_minutes) * 60.0


def budget_fraction(cfg: TrainConfig, steps_done: int, elapsed: float) -> float:
    """Share of the budget used: steps or time, whichever is further along."""
    f = 0.0
    if cfg.steps:
        f = max(f, steps_done / cfg.steps)
    max_seconds = budget_seconds(cfg)
    if max_seconds:
        f = max(f, elapsed / max_seconds)
    return min(1.0, f)


def resolve_device(name: str) -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise StsrError(
                f"device '{name}' was asked for but CUDA is not available here "
                f"(torch {torch.__version__}); use --device cpu or auto"
            )
        return torch.device(name)
    raise StsrError(f"unknown device '{name}': use auto, cpu or cuda")


def kl_divergence(mu: torch.Tensor, sigma: float) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)), summed over code dimensions, averaged over variables."""
    var = sigma * sigma     # log(var) as 2 log(sigma): a tiny sigma's square underflows to 0
    return 0.5 * (mu.pow(2) + var - 1.0 - 2.0 * math.log(sigma)).sum(dim=-1).mean()


def make_optimizer(model: FieldModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    latent = [p for n, p in model.named_parameters() if n == "latent_mu"]
    rest = [p for n, p in model.named_parameters() if n != "latent_mu"]
    groups = [{"params": rest, "lr": cfg.lr, "base_lr": cfg.lr}]
    if latent:
        groups.append({"params": latent, "lr": cfg.lr_latent, "base_lr": cfg.lr_latent})
    return torch.optim.Adam(groups, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, fraction: float, step: int) -> float:
    warm = 1.0 if cfg.warmup_steps <= 0 else min(1.0, (step + 1) / cfg.warmup_steps)
    if cfg.schedule == "constant":
        return warm
    if cfg.schedule == "cosine":
        # decays to 5% of the base rate, not 0: the last steps still learn
        return warm * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, fraction))))
    raise StsrError(f"unknown learning-rate schedule '{cfg.schedule}': use constant or cosine")


class BatchSampler:
    """Draws training batches from the normalised data ``[V, T, Z, Y, X]`` on its device.

    ``part`` (start, stop): this process's slice of each batch in a group of processes;
    every process draws the whole batch from the same random stream and keeps its slice
    (drawing is cheap next to the forward and backward passes), so the group trains on
    exactly the samples one process would."""

    def __init__(self, data: torch.Tensor, layout: BlockLayout, times_norm: torch.Tensor,
                 seed: int, part: Optional[Tuple[int, int]] = None):
        self.data = data.reshape(data.shape[0], -1)
        self.T, self.Z, self.Y, self.X = data.shape[1:]
        self.layout = layout
        self.times_norm = times_norm.to(data.device)
        self.offsets = layout.head_offsets().to(data.device)          # [H, 3]
        self.bdims = torch.tensor(layout.block_dims, device=data.device)  # x, y, z
        self.gen = torch.Generator(device=data.device)
        self.gen.manual_seed(int(seed))
        self.part = part

    def sample(self, batch: int):
        dev = self.data.device
        r = torch.rand(batch, 4, device=dev, generator=self.gen)
        if self.part is not None:
            r = r[self.part[0]:self.part[1]]
            batch = r.shape[0]
        lidx = (r[:, :3] * self.bdims).long().clamp_max(self.bdims - 1)     # [B, 3] x, y, z
        tidx = (r[:, 3] * self.T).long().clamp_max(self.T - 1)             # [B]
        g = lidx[:, None, :] + self.offsets[None, :, :]                    # [B, H, 3]
        flat = ((tidx[:, None] * self.Z + g[..., 2]) * self.Y + g[..., 1]) * self.X + g[..., 0]
        target = self.data[:, flat.reshape(-1)].reshape(self.data.shape[0], batch, -1)
        coords = torch.cat([self.layout.local_from_block_index(lidx),
                            self.times_norm[tidx][:, None]], dim=1)
        return coords, target                                              # [B,4], [V,B,H]


def _diverged(step: int, loss: float) -> StsrError:
    return StsrError(f"training diverged at step {step} (loss {loss}); the model file keeps "
                     "the last checkpoint before it; try a smaller learning rate or another "
                     "preset")


def train_loop(model: FieldModel, sampler: BatchSampler, cfg: TrainConfig,
               optimizer: torch.optim.Optimizer, start_step: int = 0,
               start_elapsed: float = 0.0, budget_spent_s: float = 0.0,
               callback: Optional[ProgressCallback] = None,
               checkpoint: Optional[Callable[[int, float], None]] = None,
               forward: Optional[Callable[..., torch.Tensor]] = None,
               loss_weight: float = 1.0) -> Dict[str, object]:
    """Run ``cfg.steps`` more steps or ``cfg.max_minutes`` more minutes (whichever first) or
    until the callback returns False. A resumed run (``start_step``/``start_elapsed`` from the
    model's history) gets the budget anew and its learning-rate schedule restarts (a warm
    restart). Returns the history (total steps, total elapsed, final loss/psnr, stop reason).
    An interrupt (KeyboardInterrupt) writes a last checkpoint, when there is a checkpoint
    hook, before it goes on up.

    In a group of processes (distributed.py) ``forward`` is the model wrapped in
    DistributedDataParallel (the gradients averaged over the ranks), each rank takes its
    slice of the ``cfg.batch_size`` samples (``sampler.part``) and weighs its MSE by
    ``loss_weight`` (its share of the batch times the ranks), so the averaged gradient is
    the one of the whole batch;
    the ranks agree at every step whether to stop (budget, a cancelling callback) and
    report the MSE averaged over them."""
    if cfg.steps is None and cfg.max_minutes is None:
        raise StsrError("training needs a budget: set steps and/or max minutes")
    max_seconds = budget_seconds(cfg)
    n_vars = sampler.data.shape[0]
    var_idx = torch.arange(n_vars, device=sampler.data.device)
    model.train()
    step = start_step
    # time already spent on this run before the loop (the model's fit to the data in
    # init_from_data) counts as training time: in the budget, the progress and elapsed_s
    t_start = time.perf_counter() - float(budget_spent_s)
    last_ckpt = time.perf_counter()
    loss_v, psnr_v = float("nan"), float("nan")
    stopped = "budget"
    log_every = max(1, int(cfg.log_every))
    total = None if cfg.steps is None else start_step + cfg.steps

    def fraction(elapsed: float) -> float:
        return budget_fraction(cfg, step - start_step, elapsed)

    forward = forward or model
    several = distributed.active()
    cancel = False
    try:
        while True:
            elapsed = time.perf_counter() - t_start
            done = cancel or (cfg.steps is not None and step - start_step >= cfg.steps) or (
                max_seconds is not None and elapsed >= max_seconds)
            if several:        # every rank stops at the same step (each has its own clock)
                done = distributed.any_rank(done, "agreeing on the training step")
            if done:
                stopped = "cancelled" if cancel else stopped
                break
            factor = lr_factor(cfg, fraction(elapsed), step - start_step)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            coords, target = sampler.sample(cfg.batch_size)
            codes = None
            if model.latent_mu is not None:
                mu = model.latent_mu
                codes = mu + cfg.latent_sigma * torch.randn(mu.shape, device=mu.device,
                                                             generator=sampler.gen)
            pred = forward(coords, var_idx, codes=codes)
            mse = torch.mean((pred - target) ** 2)
            loss = (mse if loss_weight == 1.0 else loss_weight * mse) + model.regularization()
            if model.latent_mu is not None and cfg.kl_weight > 0:
                loss = loss + cfg.kl_weight * kl_divergence(model.latent_mu, cfg.latent_sigma)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % log_every == 0 or step == 1:
                m = float(distributed.mean_over_ranks(mse.detach()[None], "reporting the loss")
                          if several else mse.detach())
                loss_v = m
                psnr_v = 20 * math.log10(2.0) - 10 * math.log10(max(m, 1e-20))
                if not math.isfinite(loss_v):
                    raise _diverged(step, loss_v)
                if callback is not None:
                    el = time.perf_counter() - t_start
                    t_cb = time.perf_counter()
                    keep_going = callback(TrainProgress(step, total, el, max_seconds, loss_v,
                                                        psnr_v, fraction(el)))
                    # time spent in the callback (a progress bar, an evaluation hook) is not
                    # training time: it does not eat the budget; a hook may have evaluated the
                    # model (eval mode): training goes on in train mode
                    t_start += time.perf_counter() - t_cb
                    model.train()
                    if keep_going is False:
                        cancel = True      # stops at the next step's check (all ranks)
            if checkpoint is not None and (
                    (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
                    or time.perf_counter() - last_ckpt > cfg.checkpoint_seconds):
                if not math.isfinite(float(mse.detach())):     # never save a diverged model
                    raise _diverged(step, float(mse.detach()))
                checkpoint(step, start_elapsed + time.perf_counter() - t_start)
                last_ckpt = time.perf_counter()
    except KeyboardInterrupt:    # Ctrl-C or SIGTERM (the CLI turns it into this)
        if checkpoint is not None and step > start_step and \
                math.isfinite(float(mse.detach())):
            checkpoint(step, start_elapsed + time.perf_counter() - t_start)
        raise
    if step > start_step:
        loss_v = float(distributed.mean_over_ranks(mse.detach()[None], "reporting the loss")
                       if several else mse.detach())
        psnr_v = 20 * math.log10(2.0) - 10 * math.log10(max(loss_v, 1e-20))
    model.eval()
    elapsed = time.perf_counter() - t_start
    if callback is not None and stopped != "cancelled":
        callback(TrainProgress(step, total, elapsed, max_seconds, loss_v, psnr_v, 1.0))
    return {"steps": step, "elapsed_s": start_elapsed + elapsed, "loss": loss_v, "batch_psnr": psnr_v,
            "stopped": stopped}
