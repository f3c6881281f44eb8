"""flowgpu's objectives and fixed-step samplers in PyTorch, in flowgpu's time convention.

Convention (flowgpu, seeds 001/003/004): t = 0 noise, t = 1 data,
x_t = (1 - t) x0 + t x1, velocity target x1 - x0.

StableVM (SV StableVM/loss.py) writes s = 1 - t: x_s = (1 - s) x + s eps and, for s >= 0.5,
w_j = softmax_j(-|x_s - (1 - s) b_j|^2 / 2 s^2), target_SV = sum_j w_j (x_s - b_j) / s, a
velocity pointing to the noise (eps - x). With s = 1 - t and the sign flipped this is
(as lib/flow/stablevm.ts):

    w_j    = softmax_j(-|x_t - t b_j|^2 / 2 (1 - t)^2)                        (S1)
    target = (sum_j w_j b_j - x_t) / (1 - t)          for t <= 0.5            (S2)
    target = x - eps                                  for t > 0.5

with SV's guards: logits floored at -1e4, then at -50 after subtracting the row maximum;
a NaN target falls back to x - eps. The bank is per-class FIFO (cap 256) plus a global
pool (cap 256) used by the null label; labels are drawn uniformly (10% replaced by the null
label) and the samples are drawn from the bank: the data batch only refills the bank.
"""
import torch

LOGIT_FLOOR = -1e4
SHIFTED_FLOOR = -50.0


def sample_times(n, cfg, device, dtype=torch.float32):
    """train:cfm's time distribution: U[0, 1) or logit-normal sigmoid(N(timeMean, timeStd^2))."""
    if cfg.get("timeSampling", "uniform") == "logit-normal":
        z = torch.randn(n, device=device, dtype=dtype)
        return torch.sigmoid(z * cfg.get("timeStd", 1.0) + cfg.get("timeMean", 0.0))
    return torch.rand(n, device=device, dtype=dtype)


def cfm_path(x0, x1, t, variant="icfm", sigma_min=0.0, noise=None):
    """(x_t, target) of I-CFM (x_t = x0 + t (x1 - x0) + sigma eps, u = x1 - x0) or Lipman's
    path (x_t = t x1 + (1 - (1 - sigma) t) x0, u = x1 - (1 - sigma) x0)."""
    tb = t.reshape(-1, *([1] * (x1.dim() - 1))).to(x1.dtype)
    if variant == "lipman":
        return tb * x1 + (1 - (1 - sigma_min) * tb) * x0, x1 - (1 - sigma_min) * x0
    xt = x0 + tb * (x1 - x0)
    if sigma_min > 0:
        xt = xt + sigma_min * (noise if noise is not None else torch.randn_like(x0))
    return xt, x1 - x0


def cfm_loss(model, x1, y, cfg, x0=None, t=None):
    """train:cfm's loss: mean over all elements of (v(x_t, t, y) - u)^2."""
    x0 = torch.randn_like(x1) if x0 is None else x0
    t = sample_times(x1.shape[0], cfg, x1.device, x1.dtype) if t is None else t
    xt, target = cfm_path(x0, x1, t, cfg.get("variant", "icfm"), cfg.get("sigmaMin", 0.0))
    v = model(xt, t, y) if y is not None else model(xt, t)
    return ((v - target) ** 2).mean()


class MemoryBank:
    """Per-class FIFO rings (cap `capacity`) plus a global pool (cap `global_capacity`) for
    the null label (index num_classes). With num_classes = 0 only the global pool exists."""

    def __init__(self, num_classes, dim, capacity=256, global_capacity=256, device="cpu"):
        self.num_classes, self.dim = num_classes, dim
        self.caps = [capacity] * num_classes + [global_capacity]
        slot = max(self.caps)
        self.data = torch.zeros(num_classes + 1, slot, dim, device=device)
        self.counts = [0] * (num_classes + 1)
        self.heads = [0] * (num_classes + 1)

    @property
    def null_label(self):
        return self.num_classes

    def _push(self, slot, rows):
        """Append rows [n, dim] to one ring (the oldest entries are overwritten)."""
        cap = self.caps[slot]
        rows = rows[-cap:]
        n = rows.shape[0]
        pos = (self.heads[slot] + torch.arange(n, device=self.data.device)) % cap
        self.data[slot, pos] = rows
        self.heads[slot] = (self.heads[slot] + n) % cap
        self.counts[slot] = min(self.counts[slot] + n, cap)

    def add(self, x, labels=None):
        """Append rows x [n, ...] with labels [n] to their class rings and the global pool
        (in order, as one row at a time would)."""
        flat = x.reshape(x.shape[0], -1).to(self.data)
        if self.num_classes:
            labels = labels.to(self.data.device)
            for c in labels.unique().tolist():
                self._push(c, flat[labels == c])
        self._push(self.num_classes, flat)

    def ready(self, fully=False):
        want = [c if fully else 1 for c in self.caps[:-1]]
        return all(self.counts[c] >= want[c] for c in range(self.num_classes)) and self.counts[-1] > 0

    def sample(self, labels):
        """One uniformly chosen entry per label -> [n, dim]."""
        counts = torch.tensor(self.counts, device=self.data.device)[labels]
        if (counts == 0).any():
            raise RuntimeError("the memory bank has an empty class: prefill it first")
        j = torch.minimum((torch.rand(labels.shape[0], device=self.data.device) * counts).long(), counts - 1)
        return self.data[labels, j]

    def entries(self, label):
        return self.data[label, :self.counts[label]]


def stable_target(xt, t, refs):
    """(S1)-(S2) against one reference set refs [M, d] shared by the rows xt [n, d]."""
    tc = t.reshape(-1, 1)
    x2 = (xt * xt).sum(1, keepdim=True)
    r2 = (refs * refs).sum(1)[None]
    dist = (x2 - 2 * tc * (xt @ refs.T) + tc * tc * r2).clamp(min=0)
    logits = (-dist / (2 * (1 - tc) ** 2)).clamp(min=LOGIT_FLOOR)
    w = torch.exp((logits - logits.max(1, keepdim=True).values).clamp(min=SHIFTED_FLOOR))
    w = w / w.sum(1, keepdim=True)
    return ((w @ refs) - xt) / (1 - tc)


@torch.no_grad()
def stablevm_target(bank, labels, x, eps, xt, t, split_t=0.5):
    """The StableVM regression target of a batch (flattened rows), grouped by label."""
    plain = x - eps
    stable = torch.empty_like(plain)
    for lab in labels.unique().tolist():
        rows = (labels == lab).nonzero(as_tuple=True)[0]
        stable[rows] = stable_target(xt[rows], t[rows], bank.entries(lab))
    chosen = torch.where((t <= split_t).reshape(-1, 1), stable, plain)
    return torch.where(torch.isnan(chosen), plain, chosen)


def draw_labels(n, num_classes, null_prob, device):
    if num_classes == 0:
        return torch.zeros(n, dtype=torch.long, device=device)
    labels = (torch.rand(n, device=device) * num_classes).long().clamp(max=num_classes - 1)
    return torch.where(torch.rand(n, device=device) < null_prob, torch.full_like(labels, num_classes), labels)


def stablevm_loss(model, bank, batch_size, shape, null_prob=0.1, t_eps=1e-4, split_t=0.5):
    """SV's StableVMLoss in our convention: labels ~ U{0..C-1} (null with prob 0.1), x from
    the bank, t ~ U[t_eps, 1 - t_eps], x_t = (1 - t) eps + t x, target (S1)-(S2)."""
    dev = bank.data.device
    labels = draw_labels(batch_size, bank.num_classes, null_prob, dev)
    x = bank.sample(labels)
    t = t_eps + (1 - 2 * t_eps) * torch.rand(batch_size, device=dev)
    eps = torch.randn_like(x)
    xt = (1 - t)[:, None] * eps + t[:, None] * x
    target = stablevm_target(bank, labels, x, eps, xt, t, split_t)
    y = labels if bank.num_classes else None
    v = model(xt.reshape(batch_size, *shape), t, y) if y is not None else model(xt.reshape(batch_size, *shape), t)
    return ((v.reshape(batch_size, -1) - target) ** 2).mean()


@torch.no_grad()
def integrate(velocity, x0, method="euler", steps=50, cond=None):
    """flowgpu's fixed-step samplers on the uniform grid t_k = k / steps from 0 to 1:
    euler, midpoint, heun (corrector on every step, the last one included), rk4."""
    x, h = x0, 1.0 / steps

    def f(z, s):
        tt = torch.full((z.shape[0],), s, dtype=z.dtype, device=z.device)
        return velocity(z, tt) if cond is None else velocity(z, tt, cond)

    for k in range(steps):
        t = k * h
        k1 = f(x, t)
        if method == "euler":
            x = x + h * k1
        elif method == "midpoint":
            x = x + h * f(x + (h / 2) * k1, t + h / 2)
        elif method == "heun":
            x = x + (h / 2) * (k1 + f(x + h * k1, t + h))
        elif method == "rk4":
            k2 = f(x + (h / 2) * k1, t + h / 2)
            k3 = f(x + (h / 2) * k2, t + h / 2)
            k4 = f(x + h * k3, t + h)
            x = x + (h / 6) * (k1 + k4 + 2 * (k2 + k3))
        else:
            raise ValueError(f"unknown method {method!r}")
    return x
