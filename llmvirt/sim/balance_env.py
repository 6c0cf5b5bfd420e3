"""The balance scenario, batched: many fleets stepped together, fast enough to train a policy on.

Each of ``E`` environments is one fleet of hosts running VMs drawn from a trace. Fleet shapes
differ between environments (3 to 10 hosts of 8 to 24 cores, 45 % to 80 % mean CPU load; one size a
fleet, or with ``EnvConfig.mixed_sizes`` each host its own: every limit and cost is per host) and are
padded to common array sizes, so one numpy call steps them all. A step is one trace sample (300 s):

1. the policy's move (at most one live migration per fleet and step, ``vm -> host`` or none) is
   applied if the destination keeps its allocation limits (vCPUs and provisioned memory); a move
   that breaks them is refused and counted (``refused``): a policy with a correct mask has none;
2. time advances and the fleet's demand is measured.

The cost of a step, in core-hours (lower is better; :data:`COST` fixes the weights, set before any
policy or baseline was tuned on this scenario, docs/metrics.md):

- **unmet demand**: CPU a host's VMs asked for above the host's cores, core-hours;
- **migration**: the moved VM loses 10 % of its CPU for the copy (as CloudSim models it), the copy
  takes one core on each end for its duration (memory in use at ``migration_gbit_s`` with 30 % of
  it re-sent as dirty pages), plus 0.05 core-hours per migration for the operator's risk.

The simulator knows nothing of policies (the layers are one-way): callers pass moves, and read the
state (:class:`BalanceState`) to decide them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmvirt.model.arrays import ClusterArrays, FleetSetup
from llmvirt.sim.traces import UsageTrace

HISTORY = 12  #: samples of each VM's CPU history the state carries (one hour of 300 s samples)

COST = {"unmet_core_h": 1.0, "migration_risk_core_h": 0.05, "degradation": 0.10, "dirty_factor": 1.3}
"""The balance cost's fixed weights (see the module docstring)."""


@dataclass(frozen=True)
class EnvConfig:
    """How fleets are drawn and what a step costs."""

    hosts: tuple[int, int] = (3, 10)  #: hosts per fleet, inclusive range
    host_cores: tuple[int, ...] = (8, 16, 24)  #: host sizes drawn from
    mixed_sizes: bool = False  #: each host draws its own size (else one size per fleet)
    mhz_per_core: float = 2600.0  #: per core (Bitbrains' MHz are converted to cores with it)
    mem_gib_per_core: float = 32.0  #: host memory per core (Bitbrains VMs hold much memory for little CPU)
    load: tuple[float, float] = (0.45, 0.80)  #: fleet mean CPU demand over the episode / fleet cores
    cpu_allocation_ratio: float = 12.0  #: vCPUs allowed per core
    ram_allocation_ratio: float = 1.0  #: provisioned memory allowed per host memory
    episode_steps: int = 288  #: one day of 300 s steps
    migration_gbit_s: float = 10.0  #: network for live migration
    max_vms: int = 320  #: padding: VMs per fleet at most
    interval_s: int = 300  #: seconds per step

    @property
    def max_hosts(self) -> int:
        """Padding: hosts per fleet at most."""
        return self.hosts[1]


@dataclass
class Fleet:
    """One drawn fleet: which trace VMs, from which step, on how many hosts of what size."""

    vms: np.ndarray  #: trace index of each VM
    start: np.ndarray  #: per VM: the trace step of the episode's first step
    n_hosts: int  #: hosts
    cores: np.ndarray  #: (n_hosts,) cores of each host (one number: all of that size)
    vm_host: np.ndarray  #: initial host of each VM
    since_move: np.ndarray | None = None  #: per VM, steps since it last moved (None: never)

    def __post_init__(self) -> None:
        """One number for ``cores`` means hosts of that one size."""
        self.cores = np.broadcast_to(np.asarray(self.cores, dtype=np.float64), (self.n_hosts,)).copy()


@dataclass
class BalanceState:
    """What a policy reads at a step, for all environments (padded: see ``vm_valid``, ``host_valid``)."""

    cores: np.ndarray  #: (E, H) cores of each host (padding hosts: 1)
    host_valid: np.ndarray  #: (E, H) the host exists
    vm_valid: np.ndarray  #: (E, V) the VM exists
    vm_host: np.ndarray  #: (E, V) host of each VM
    demand: np.ndarray  #: (E, V) CPU demand now, cores
    history: np.ndarray  #: (E, V, HISTORY) CPU demand, cores, oldest first, the last one is now
    vcpus: np.ndarray  #: (E, V)
    mem_cap_gib: np.ndarray  #: (E, V) provisioned memory
    mem_gib: np.ndarray  #: (E, V) memory in use now (what a migration copies)
    host_vcpus: np.ndarray  #: (E, H) provisioned vCPUs on each host
    host_mem_cap: np.ndarray  #: (E, H) provisioned memory on each host, GiB
    vcpu_limit: np.ndarray  #: (E, H) vCPUs each host may hold
    mem_limit: np.ndarray  #: (E, H) GiB of provisioned memory each host may hold
    since_move: np.ndarray  #: (E, V) steps since the VM last moved (large: never)
    movable: np.ndarray  #: (E, V) the VM may live-migrate
    placeable: np.ndarray  #: (E, H) the host may receive VMs (not in maintenance)

    @property
    def n_envs(self) -> int:
        """Environments in the batch."""
        return int(self.cores.shape[0])


@dataclass
class EnvMetrics:
    """Per-environment totals since the last reset."""

    unmet_core_h: np.ndarray  #: CPU demand not served (overload, migration degradation)
    migration_core_h: np.ndarray  #: the migrations' copy CPU and risk
    overload_host_h: np.ndarray  #: host-hours with demand above the cores
    migrations: np.ndarray  #: migrations made
    gib_migrated: np.ndarray  #: memory moved
    refused: np.ndarray  #: moves refused by the allocation limits
    demand_core_h: np.ndarray  #: total demand
    bound_core_h: np.ndarray  #: the fluid lower bound of the cost: demand above the fleet's cores, summed

    @classmethod
    def zeros(cls, n: int) -> EnvMetrics:
        """All zero."""
        return cls(*(np.zeros(n) for _ in range(8)))

    def reset(self, done: np.ndarray) -> None:
        """Zero the environments in ``done``."""
        for v in vars(self).values():
            v[done] = 0.0

    @property
    def cost(self) -> np.ndarray:
        """The balance cost, core-hours (lower is better)."""
        return self.unmet_core_h + self.migration_core_h

    def row(self, e: int) -> dict[str, float]:
        """One environment's figures, with the cost and unmet demand as a share of demand."""
        d = {k: float(v[e]) for k, v in vars(self).items()}
        d["cost"] = float(self.cost[e])
        d["unmet_demand_pct"] = 100 * d["unmet_core_h"] / max(d["demand_core_h"], 1e-9)
        return d


def trace_pool(trace: UsageTrace, mhz_per_core: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The trace as the environment's pool: CPU in cores (VMs x steps, float32), vCPUs, provisioned and
    used memory in GiB; one extra all-zero VM at the end pads fleets."""
    n, t = trace.cpu_mhz.shape
    cpu = np.zeros((n + 1, t), dtype=np.float32)
    cpu[:n] = trace.cpu_mhz / mhz_per_core
    mem = np.zeros((n + 1, t), dtype=np.float32)
    mem[:n] = trace.mem_mib / 1024
    vcpus = np.append(trace.vcpus.astype(np.float64), 0.0)
    mcap = np.append(trace.mem_capacity_mib / 1024, 0.0)
    return cpu, vcpus, mcap, mem


def _host_sizes(rng: np.random.Generator, cfg: EnvConfig) -> tuple[np.ndarray, int, int]:
    """(cores of each of the most hosts a fleet may get, their count, the fleet's one size or 0 when mixed).
    A fleet of one size draws exactly what it always drew (its fleets and results stay the same)."""
    cores = int(rng.choice(cfg.host_cores))
    n_hosts = int(rng.integers(cfg.hosts[0], cfg.hosts[1] + 1))
    if cfg.mixed_sizes:
        return rng.choice(np.asarray(cfg.host_cores, dtype=np.float64), size=n_hosts), n_hosts, 0
    return np.full(n_hosts, float(cores)), n_hosts, cores


def _hosts_needed(sizes: np.ndarray, one: int, total: float, load: float, lo: int) -> int:
    """The fewest of the drawn hosts (at least ``lo``) whose cores at ``load`` carry ``total``."""
    if one:
        return int(np.clip(np.ceil(total / (load * one)), lo, sizes.size))
    return int(np.clip(np.searchsorted(np.cumsum(sizes) * load, total - 1e-9) + 1, lo, sizes.size))


def draw_fleet(rng: np.random.Generator, pool_cpu: np.ndarray, pool_vcpus: np.ndarray, pool_mcap: np.ndarray,
               cfg: EnvConfig, eligible: np.ndarray | None = None) -> Fleet:
    """A random fleet: host sizes, VMs (each a trace VM shifted by whole days, so daily rhythms
    stay) until their mean demand over the episode reaches the drawn load of the drawn hosts
    (fewer hosts where the VMs run out), and a random placement within the allocation limits (so
    fleets start unbalanced)."""
    n_vm, n_t = pool_cpu.shape[0] - 1, pool_cpu.shape[1]
    span = cfg.episode_steps + HISTORY
    if n_t < span + 1:
        raise ValueError(f"the trace has {n_t} steps; an episode needs {span + 1}")
    sizes, n_hosts, one = _host_sizes(rng, cfg)
    load = float(rng.uniform(*cfg.load))
    days = cfg.episode_steps
    last = n_t - 1 - cfg.episode_steps  # the latest first step: the episode's last step must exist
    start = int(rng.integers(HISTORY, max(HISTORY, min(days, last)) + 1))
    shifts = start + days * np.arange((last - start) // days + 1)
    pool = np.arange(n_vm) if eligible is None else np.asarray(eligible)
    pool = pool[pool_vcpus[pool] <= sizes.max() / 2]
    slots = [(int(v), int(s)) for v in pool for s in shifts]
    target = load * n_hosts * one if one else load * float(sizes.sum())
    chosen, starts, total = [], [], 0.0
    for i in rng.permutation(len(slots)):
        if total >= target or len(chosen) >= cfg.max_vms:
            break
        v, s = slots[i]
        chosen.append(v)
        starts.append(s)
        total += float(pool_cpu[v, s:s + cfg.episode_steps].mean())
    n_hosts = _hosts_needed(sizes, one, total, load, cfg.hosts[0])
    sizes = sizes[:n_hosts]
    vcpu_lim = cfg.cpu_allocation_ratio * sizes
    mem_lim = cfg.ram_allocation_ratio * sizes * cfg.mem_gib_per_core
    host_v = np.zeros(n_hosts)
    host_m = np.zeros(n_hosts)
    keep, placed = [], []
    for i, v in enumerate(chosen):
        room = np.flatnonzero((host_v + pool_vcpus[v] <= vcpu_lim) & (host_m + pool_mcap[v] <= mem_lim))
        if room.size == 0:
            continue
        h = int(rng.choice(room))
        host_v[h] += pool_vcpus[v]
        host_m[h] += pool_mcap[v]
        keep.append(i)
        placed.append(h)
    idx = np.array(keep, dtype=np.int64)
    return Fleet(np.array(chosen, dtype=np.int64)[idx], np.array(starts, dtype=np.int64)[idx], n_hosts, sizes,
                 np.array(placed, dtype=np.int64))


@dataclass
class BalanceEnv:
    """``E`` fleets stepped together; see the module docstring. ``fleets`` fixes them (evaluation);
    otherwise each is drawn from ``rng`` and redrawn when its episode ends (training)."""

    trace: UsageTrace  #: VMs drawn from
    n_envs: int  #: environments
    cfg: EnvConfig = field(default_factory=EnvConfig)  #: fleet shapes and cost
    seed: int = 0  #: random draws
    eligible: np.ndarray | None = None  #: trace VMs fleets may draw (a split); None: all
    fleets: list[Fleet] | None = None  #: fixed fleets instead of random ones

    def __post_init__(self) -> None:
        """Build the pool and the padded arrays, and draw (or load) every fleet."""
        self.rng = np.random.default_rng(self.seed)
        self.pool_cpu, self.pool_vcpus, self.pool_mcap, self.pool_mem = trace_pool(self.trace, self.cfg.mhz_per_core)
        self.pad = self.pool_cpu.shape[0] - 1
        e, v, h = self.n_envs, self.cfg.max_vms, self.cfg.max_hosts
        self.vm_src = np.full((e, v), self.pad, dtype=np.int64)
        self.vm_host = np.zeros((e, v), dtype=np.int64)
        self.vm_valid = np.zeros((e, v), dtype=bool)
        self.host_valid = np.zeros((e, h), dtype=bool)
        self.cores = np.ones((e, h))  # padding hosts: 1 core (never valid, never divided by 0)
        self.start = np.zeros((e, v), dtype=np.int64)
        self.t = np.zeros(e, dtype=np.int64)
        self.since_move = np.full((e, v), 1000.0)
        self.metrics = EnvMetrics.zeros(e)
        self.episodes = 0
        for i in range(e):
            self._load(i, self.fleets[i] if self.fleets is not None else self._draw())

    def _draw(self) -> Fleet:
        return draw_fleet(self.rng, self.pool_cpu, self.pool_vcpus, self.pool_mcap, self.cfg, self.eligible)

    def _load(self, i: int, fleet: Fleet) -> None:
        n = fleet.vms.size
        if n > self.cfg.max_vms or fleet.n_hosts > self.cfg.max_hosts:
            raise ValueError(f"fleet of {n} VMs on {fleet.n_hosts} hosts exceeds the padding")
        self.vm_src[i] = self.pad
        self.vm_src[i, :n] = fleet.vms
        self.vm_host[i] = 0
        self.vm_host[i, :n] = fleet.vm_host
        self.vm_valid[i] = False
        self.vm_valid[i, :n] = True
        self.host_valid[i] = False
        self.host_valid[i, : fleet.n_hosts] = True
        self.cores[i] = 1.0
        self.cores[i, : fleet.n_hosts] = fleet.cores
        self.start[i] = HISTORY
        self.start[i, :n] = fleet.start
        self.t[i] = 0
        self.since_move[i] = 1000.0
        if fleet.since_move is not None:
            self.since_move[i, :n] = fleet.since_move

    def snapshot(self, e: int) -> Fleet:
        """Environment ``e`` as it is now, as a fixed fleet whose first step is the current one: the
        start of a counterfactual (what if this move, what if none)."""
        n = int(self.vm_valid[e].sum())
        n_h = int(self.host_valid[e].sum())
        return Fleet(self.vm_src[e, :n].copy(), self.start[e, :n] + self.t[e], n_h, self.cores[e, :n_h].copy(),
                     self.vm_host[e, :n].copy(), self.since_move[e, :n].copy())

    # ---- the state a policy reads ------------------------------------------------------------
    def _col(self) -> np.ndarray:
        return self.start + self.t[:, None]

    def demand_now(self) -> np.ndarray:
        """(E, V) CPU demand of every VM at the current step, cores (padding included: mask with ``vm_valid``)."""
        return self.pool_cpu[self.vm_src, self._col()].astype(np.float64)

    def host_sum(self, per_vm: np.ndarray) -> np.ndarray:
        """(E, H) sums of a per-VM (E, V) figure."""
        e, h = self.n_envs, self.cfg.max_hosts
        flat = (self.vm_host + np.arange(e)[:, None] * h).ravel()
        return np.bincount(flat, (per_vm * self.vm_valid).ravel(), minlength=e * h).reshape(e, h)

    def state(self) -> BalanceState:
        """The current state of every environment."""
        cols = self._col()[:, :, None] + np.arange(-HISTORY + 1, 1)
        hist = self.pool_cpu[self.vm_src[:, :, None], cols]
        vcpus = self.pool_vcpus[self.vm_src]
        mcap = self.pool_mcap[self.vm_src]
        c = self.cfg
        return BalanceState(
            cores=self.cores.copy(), host_valid=self.host_valid.copy(), vm_valid=self.vm_valid.copy(),
            vm_host=self.vm_host.copy(), demand=hist[:, :, -1].astype(np.float64), history=hist,
            vcpus=vcpus, mem_cap_gib=mcap, mem_gib=self.pool_mem[self.vm_src, self._col()].astype(np.float64),
            host_vcpus=self.host_sum(vcpus), host_mem_cap=self.host_sum(mcap),
            vcpu_limit=c.cpu_allocation_ratio * self.cores,
            mem_limit=c.ram_allocation_ratio * self.cores * c.mem_gib_per_core,  # (E, H), per host
            since_move=self.since_move.copy(), movable=self.vm_valid.copy(), placeable=self.host_valid.copy())

    def fleet_view(self, e: int) -> ClusterArrays:
        """Environment ``e`` as the balance scenario's ClusterArrays (what Watcher and ProxLB decide on)."""
        n = int(self.vm_valid[e].sum())
        src = self.vm_src[e, :n]
        col = self.start[e, :n] + self.t[e]
        c = self.cfg
        n_h = int(self.host_valid[e].sum())
        cores = self.cores[e, :n_h].copy()
        setup = FleetSetup(host_cores=int(cores[0]), mhz_per_core=c.mhz_per_core,
                           host_mem_mib=cores[0] * c.mem_gib_per_core * 1024,
                           cpu_allocation_ratio=c.cpu_allocation_ratio, ram_allocation_ratio=c.ram_allocation_ratio)
        mem = self.pool_mem[src, col].astype(np.float64) * 1024
        cap = self.pool_mcap[src] * 1024
        return ClusterArrays(setup, self.vm_host[e, :n].copy(), self.pool_vcpus[src].astype(np.int64), cap,
                             self.pool_cpu[src, col].astype(np.float64) * c.mhz_per_core, mem, cap.copy(),
                             np.maximum(cap - mem, 0.0), n_h, np.zeros(n_h, dtype=bool),
                             host_cpus=cores, host_mem_mib=cores * c.mem_gib_per_core * 1024)

    # ---- stepping ----------------------------------------------------------------------------
    def step(self, vm: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply one move per environment (``vm`` -1: none), advance one step; returns (cost, done).

        Finished environments are redrawn (random fleets) or left finished (fixed fleets: check ``done``)."""
        cost = self.move(vm, dst)
        more, done = self.advance()
        return cost + more, done

    def move(self, vm: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Apply one live migration per environment (``vm`` -1: none) without advancing time; returns
        the migrations' cost. A move the allocation limits refuse is counted in ``refused`` and skipped.
        A baseline that plans several moves in a step calls this once per move."""
        e_idx = np.arange(self.n_envs)
        cfg = self.cfg
        want = vm >= 0
        v = np.where(want, vm, 0)
        dd = np.clip(np.where(want, dst, 0), 0, cfg.max_hosts - 1)
        src_vm = self.vm_src[e_idx, v]
        vcpus = self.pool_vcpus[src_vm]
        mcap = self.pool_mcap[src_vm]
        host_v = self.host_sum(self.pool_vcpus[self.vm_src])
        host_m = self.host_sum(self.pool_mcap[self.vm_src])
        ok = (want & self.vm_valid[e_idx, v] & (dst >= 0) & (dst < cfg.max_hosts) & self.host_valid[e_idx, dd]
              & (self.vm_host[e_idx, v] != dd))
        cores = self.cores[e_idx, dd]
        ok &= host_v[e_idx, dd] + vcpus <= cfg.cpu_allocation_ratio * cores + 1e-9
        ok &= host_m[e_idx, dd] + mcap <= cfg.ram_allocation_ratio * cores * cfg.mem_gib_per_core + 1e-9
        self.metrics.refused += want & ~ok
        if not ok.any():
            return np.zeros(self.n_envs)
        col = self.start[e_idx, v] + self.t
        gib = self.pool_mem[src_vm, col].astype(np.float64)
        cores_now = self.pool_cpu[src_vm, col].astype(np.float64)
        copy_h = gib * 8 * COST["dirty_factor"] / cfg.migration_gbit_s / 3600  # hours
        degr = np.where(ok, COST["degradation"] * cores_now * copy_h, 0.0)
        mig = np.where(ok, 2 * copy_h + COST["migration_risk_core_h"], 0.0)
        self.vm_host[e_idx[ok], v[ok]] = dd[ok]
        self.since_move[e_idx[ok], v[ok]] = 0.0
        self.metrics.unmet_core_h += degr
        self.metrics.migration_core_h += mig
        self.metrics.migrations += ok
        self.metrics.gib_migrated += np.where(ok, gib, 0.0)
        return degr + mig

    def advance(self) -> tuple[np.ndarray, np.ndarray]:
        """Advance every environment one step and measure it; returns (unmet-demand cost, done)."""
        cfg = self.cfg
        dt_h = cfg.interval_s / 3600
        self.since_move += 1
        self.t += 1
        demand = self.demand_now()
        load = self.host_sum(demand)
        over = np.maximum(load - self.cores, 0.0) * self.host_valid
        unmet = over.sum(axis=1) * dt_h
        self.metrics.unmet_core_h += unmet
        self.metrics.overload_host_h += (over > 1e-9).sum(axis=1) * dt_h
        self.metrics.demand_core_h += (demand * self.vm_valid).sum(axis=1) * dt_h
        # no policy does better than VMs split freely over the whole fleet and moved for free
        cores = (self.cores * self.host_valid).sum(axis=1)
        self.metrics.bound_core_h += np.maximum((demand * self.vm_valid).sum(axis=1) - cores, 0.0) * dt_h
        done = self.t >= cfg.episode_steps
        if done.any() and self.fleets is None:
            self.finished = EnvMetrics(*(x.copy() for x in vars(self.metrics).values()))
            for i in np.flatnonzero(done):
                self._load(int(i), self._draw())
                self.episodes += 1
            self.metrics.reset(done)
        return unmet, done
