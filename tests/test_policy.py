"""Constraints as the action mask, checkpoints, place/rebalance, and training reproducibility."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import fixture_uri

from llmvirt.model.cluster import Cluster, Gpu, GpuAttachment, Host, MdevType, Vm
from llmvirt.policy import checkpoint, decide
from llmvirt.policy.constraints import Limits, Request, check_host
from llmvirt.policy.model import PlacementScorer

ROOT = Path(__file__).resolve().parents[1]


def _random_cluster(rng: np.random.Generator) -> tuple[Cluster, dict[str, str]]:
    hosts, groups = [], {}
    for h in range(int(rng.integers(1, 7))):
        gpus = [Gpu(pci=f"0000:{h:02x}:00.0", vendor="NVIDIA", vendor_id="0x10de", model="H100", product_id="x",
                    driver="vfio-pci",
                    mdev_types=(MdevType("nvidia-1", "A", int(rng.integers(0, 3))),) if rng.random() < 0.5 else ())
                for _ in range(int(rng.integers(0, 3)))]
        host = Host(name=f"h{h}", uri="test:///default", cpus=int(rng.choice([8, 16, 32])),
                    memory_mib=int(rng.choice([16384, 65536])), gpus=gpus, maintenance=bool(rng.random() < 0.2))
        for v in range(int(rng.integers(0, 8))):
            name = f"h{h}v{v}"
            att = [GpuAttachment("passthrough", pci=gpus[0].pci)] if gpus and rng.random() < 0.2 else []
            host.vms.append(Vm(name=name, uuid=name, vcpus=int(rng.integers(1, 9)), max_vcpus=8,
                               memory_mib=int(rng.choice([1024, 4096, 8192])),
                               current_memory_mib=int(rng.choice([1024, 4096])), cpu_util=float(rng.random()),
                               gpus=att, pci_hostdevs=tuple(a.pci for a in att if a.pci)))
            if rng.random() < 0.3:
                groups[name] = f"g{int(rng.integers(0, 3))}"
        hosts.append(host)
    return Cluster(hosts), groups


@pytest.mark.parametrize("scorer", ["baseline:best-fit", "baseline:least-loaded", "baseline:first-fit", None])
def test_no_infeasible_action_is_ever_chosen(scorer) -> None:
    rng = np.random.default_rng(7)
    sc = decide.load_scorer(scorer)
    limits = Limits(cpu_allocation_ratio=float(rng.choice([1.0, 2.0, 4.0])))
    for _ in range(150):
        cluster, groups = _random_cluster(rng)
        req = Request(vcpus=int(rng.integers(1, 16)), memory_mib=int(rng.choice([512, 4096, 32768])),
                      gpus=int(rng.integers(0, 2)), vgpu_type="nvidia-1" if rng.random() < 0.2 else None,
                      anti_affinity=f"g{int(rng.integers(0, 3))}" if rng.random() < 0.3 else None)
        result = decide.place(cluster, req, sc, decide.Context(limits, groups))
        for r in result.ranked:  # every ranked host passes every constraint
            assert check_host(cluster.host(r["host"]), req, limits, groups) is None
        assert set(result.excluded) | {r["host"] for r in result.ranked} == {h.name for h in cluster.hosts}
        plan = decide.rebalance(cluster, sc, str(rng.choice(["balance", "consolidate"])),
                                decide.Context(limits, groups, max_migrations=5))
        moved = {m.vm for m in plan.moves}
        for m in plan.moves:
            dst = cluster.host(m.dst)
            assert dst is not None and not dst.maintenance
        for h in cluster.hosts:  # after the plan: passthrough VMs never moved, anti-affinity holds on moved VMs
            for v in h.vms:
                if v.name in moved:
                    assert not v.has_pci_passthrough
                    g = groups.get(v.name)
                    if g:
                        assert sum(groups.get(o.name) == g for o in h.vms if o.running) == 1


def test_excluded_hosts_name_their_constraint() -> None:
    cluster = Cluster([Host(name="m", uri="x", cpus=8, memory_mib=8192, maintenance=True),
                       Host(name="small", uri="x", cpus=2, memory_mib=8192),
                       Host(name="ok", uri="x", cpus=32, memory_mib=65536)])
    res = decide.place(cluster, Request(vcpus=16, memory_mib=4096), decide.load_scorer("baseline:best-fit"),
                       decide.Context(Limits(cpu_allocation_ratio=1.0, reserved_memory_mib=0)))
    assert res.excluded == {"m": "maintenance", "small": "capacity_cpu"}
    assert [r["host"] for r in res.ranked] == ["ok"]
    res = decide.place(cluster, Request(vcpus=1, memory_mib=4096), decide.load_scorer("baseline:best-fit"),
                       decide.Context(Limits(cpu_allocation_ratio=1.0, reserved_cpus=2, reserved_memory_mib=0)))
    assert res.excluded["small"] == "reserved_capacity"


def test_checkpoint_round_trip_and_refusals(tmp_path: Path) -> None:
    model = PlacementScorer(hidden=8)
    checkpoint.save(model, tmp_path / "p", {"name": "p", "seed": 1})
    loaded, meta = checkpoint.load(tmp_path / "p")
    x = np.random.default_rng(0).random((5, model.n_features)).astype(np.float32)
    import torch

    assert torch.allclose(checkpoint.score(loaded, torch.from_numpy(x)), checkpoint.score(model, torch.from_numpy(x)))
    assert meta["feature_spec"]["features"][0] == "host_cpu_used" and meta["seed"] == 1
    bad = tmp_path / "spec"
    shutil.copytree(tmp_path / "p", bad)
    doc = json.loads((bad / "policy.json").read_text())
    doc["feature_spec"]["features"] = list(reversed(doc["feature_spec"]["features"]))
    (bad / "policy.json").write_text(json.dumps(doc))
    with pytest.raises(checkpoint.CheckpointError, match="different feature spec"):
        checkpoint.load(bad)
    tampered = tmp_path / "tampered"
    shutil.copytree(tmp_path / "p", tampered)
    data = bytearray((tampered / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (tampered / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match="SHA-256 does not match"):
        checkpoint.load(tampered)
    with pytest.raises(checkpoint.CheckpointError, match="not a policy checkpoint"):
        checkpoint.load(tmp_path / "nothing")


def test_shipped_default_policy_loads_and_is_small() -> None:
    model, meta = checkpoint.load(ROOT / "policies" / "default")
    size = sum(p.stat().st_size for p in (ROOT / "policies" / "default").iterdir())
    assert size < 5 * 2**20 and meta["scenario"] == "balance" and "held_out_vms" in meta["training_data"]


def test_place_define_creates_the_vm_and_json_stays_one_document(cli, tmp_path: Path) -> None:
    """place --define --json: the creation is reported inside the JSON document, not as a line after it."""
    cli("hosts", "add", "spare", fixture_uri("small-host.xml"))
    cli("scan")
    xml = tmp_path / "new.xml"
    xml.write_text("<domain type='test'><name>new-vm</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>"
                   "<os><type>hvm</type></os></domain>")
    code, out, err = cli("place", "--vcpus", "1", "--memory", "256M", "--define", str(xml), "--json")
    assert code == 0, err
    assert json.loads(out)["defined"] == {"vm": "new-vm", "host": "spare"}
    code, out, err = cli("place", "--vcpus", "1", "--memory", "256M", "--define", str(xml))
    assert code == 0 and "defined and started new-vm on spare" in out, err
    code, out, err = cli("place", "--vcpus", "1", "--memory", "256M", "--define", str(tmp_path / "missing.xml"))
    assert code == 2 and "cannot read" in err


def test_place_and_rebalance_cli(cli) -> None:
    for name, f in (("gpu1", "gpu-host.xml"), ("busy", "busy-host.xml"), ("spare", "small-host.xml")):
        cli("hosts", "add", name, fixture_uri(f))
    cli("scan")
    code, out, err = cli("place", "--vcpus", "2", "--memory", "2G", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["chosen"] in ("gpu1", "busy", "spare") and doc["ranked"][0]["reasons"]
    code, out, _ = cli("place", "--vcpus", "2", "--memory", "2G", "--vgpu", "nvidia-1156", "--json")
    doc = json.loads(out)
    assert doc["chosen"] == "gpu1" and {"host": "busy", "constraint": "gpu_type"} in doc["excluded"]
    code, out, err = cli("place", "--vcpus", "2", "--memory", "2G", "--gpu", "1")
    assert code == 1 and "nothing fits" in err  # the H100 is taken, the L40S is split into vGPUs
    code, out, err = cli("place", "--vcpus", "2", "--memory", "2G", "--gpu", "1", "--json")
    assert code == 1 and json.loads(out)["ranked"] == [] and "nothing fits" in err  # stdout stays one document
    code, _, err = cli("place", "--vcpus", "0", "--memory", "2G")
    assert code == 2 and "--vcpus" in err
    code, _, err = cli("place", "--vcpus", "1", "--memory", "0")
    assert code == 2 and "a VM needs some memory" in err
    code, out, err = cli("place", "--vcpus", "1", "--memory", "1T", "--json")  # more than any host: none fits
    assert code == 1 and json.loads(out)["chosen"] is None and {e["constraint"] for e in json.loads(out)["excluded"]}
    cli("hosts", "maintenance", "gpu1", "on")
    cli("scan")
    code, out, err = cli("rebalance", "--json", "--policy", "baseline:least-loaded")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["dry_run"] is True
    assert plan["unmovable"]["train1"].startswith("PCI passthrough")
    assert "infer1" in plan["unmovable"]  # its vGPU type exists nowhere else
    code, _, err = cli("rebalance", "--goal", "sideways")
    assert code == 2 and "unknown goal" in err
    code, _, err = cli("place", "--vcpus", "1", "--memory", "1G", "--policy", "/nonexistent")
    assert code == 2 and "not a policy checkpoint" in err


def test_training_is_reproducible_from_the_seed(tmp_path: Path) -> None:
    from llmvirt.learn.train import TrainConfig, train
    from llmvirt.sim.traces import UsageTrace

    rng = np.random.default_rng(3)
    n, t = 30, 80
    tr = UsageTrace(tuple(f"vm{i}" for i in range(n)), 300, np.full(n, 8.0), np.full(n, 20800.0),
                    rng.random((n, t)) * 20800, np.full(n, 65536.0), np.full((n, t), 4096.0))
    cfg = TrainConfig(seed=5, samples=40, epochs=3, horizon=6)
    a = train(tr, tmp_path / "a", cfg)
    b = train(tr, tmp_path / "b", cfg)
    assert a["val_loss"] == b["val_loss"]
    meta_a = json.loads((tmp_path / "a" / "policy.json").read_text())
    meta_b = json.loads((tmp_path / "b" / "policy.json").read_text())
    assert meta_a["weights_sha256"] == meta_b["weights_sha256"]
    assert (tmp_path / "a" / "learning_curve.png").exists()


def test_vectorised_index_matches_per_host_reference() -> None:
    from llmvirt.model.arrays import ClusterArrays
    from llmvirt.policy import index
    from llmvirt.policy.constraints import check_host
    from llmvirt.policy.features import FEATURES, pair_features

    rng = np.random.default_rng(11)
    for _ in range(100):
        cluster, groups = _random_cluster(rng)
        limits = Limits(cpu_allocation_ratio=float(rng.choice([1.0, 4.0])), reserved_cpus=int(rng.integers(0, 3)),
                        reserved_memory_mib=int(rng.choice([0, 2048])))
        req = Request(vcpus=int(rng.integers(1, 16)), memory_mib=int(rng.choice([512, 8192])),
                      gpus=int(rng.integers(0, 2)), vgpu_type="nvidia-1" if rng.random() < 0.3 else None,
                      anti_affinity=f"g{int(rng.integers(0, 3))}" if rng.random() < 0.4 else None)
        arrays = ClusterArrays.from_cluster(cluster, groups=groups)
        reasons = index.mask(arrays, req, limits)
        for i, h in enumerate(cluster.hosts):
            assert (check_host(h, req, limits, groups) or "") == reasons[i]
        rows = np.arange(len(cluster.hosts))
        ref = np.stack([pair_features(h, req, 0.3, limits) for h in cluster.hosts])
        assert np.allclose(index.features(arrays, req, 0.3, limits, rows), ref, atol=1e-6)
        peak = np.where(rng.random(rows.size) < 0.3, np.nan, rng.random(rows.size) * 8)  # some hosts without history
        last = FEATURES.index("host_cpu_peak_after")
        known = ~np.isnan(peak)
        cpus = np.array([max(1, h.cpus) for h in cluster.hosts])
        ref[known, last] = peak[known] / cpus[known] + req.vcpus * 0.3 / cpus[known]
        assert np.allclose(index.features(arrays, req, 0.3, limits, rows, peak), ref, atol=1e-6)


def test_host_pinning_restricts_moves(cli, tmp_path: Path) -> None:
    for name, f in (("gpu1", "gpu-host.xml"), ("busy", "busy-host.xml"), ("spare", "small-host.xml")):
        cli("hosts", "add", name, fixture_uri(f))
    cfg = tmp_path / "c.toml"
    cfg.write_text('[host_pinning]\nweb1 = ["busy", "gpu1"]\n')
    cli("hosts", "maintenance", "busy", "on")
    cli("scan")
    code, out, err = cli("--config", str(cfg), "rebalance", "--json", "--policy", "baseline:least-loaded")
    assert code == 0, err
    plan = json.loads(out)
    web1 = [m for m in plan["moves"] if m["vm"] == "web1"]
    assert web1 and web1[0]["dst"] == "gpu1"  # drained, but only to a host it is pinned to
    cfg.write_text('[host_pinning]\nweb1 = ["busy"]\n')
    plan = json.loads(cli("--config", str(cfg), "rebalance", "--json", "--policy", "baseline:least-loaded")[1])
    assert plan["unmovable"]["web1"] == "no host satisfies its constraints"


def test_numpy_inference_scores_like_the_torch_model() -> None:
    """place/rebalance score with numpy (no torch at decision time): the same scores as the torch module."""
    import torch

    from llmvirt.policy.features import FEATURES

    model, _ = checkpoint.load(decide.DEFAULT_POLICY)
    scorer = decide.load_scorer(None)
    x = np.random.default_rng(0).random((500, len(FEATURES))).astype(np.float32)
    with torch.no_grad():  # a checkpoint of an older feature spec reads the columns it knows
        expected = model(torch.from_numpy(x[:, :model.n_features])).numpy()
    np.testing.assert_allclose(scorer.scores(x, []), expected, rtol=1e-5, atol=1e-5)
    assert (scorer.scores(x, []).argmax() == expected.argmax())


def test_rebalance_path_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom llmvirt.strategies import registry\nregistry.resolve(None, 'balance')\n"
            "registry.resolve(None, 'consolidate')\nimport llmvirt.cli\nprint('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False", res.stderr


def test_reasons_and_predictions_read_correctly_at_the_boundary() -> None:
    """Issue 18: never "60 % > 60 %", never "-0 W", and the predicted effect is a sentence, not a dict."""
    from llmvirt.cli.plan_cmds import _watts, predicted_sentence

    assert decide._pct_above(0.6004, 0.6) == "60.04 %" and decide._pct_above(0.75, 0.6) == "75 %"
    assert _watts(-0.4) == "±0 W" and _watts(12.6) == "+13 W" and _watts(-30) == "-30 W"
    before = {"overloaded_hosts": 1, "hot_hosts": 2, "imbalance": 0.45, "power_w": 850.0}
    after = {"overloaded_hosts": 0, "hot_hosts": 1, "imbalance": 0.2, "power_w": 700.0}
    text = predicted_sentence(before, after)
    assert text == ("predicted: overloaded hosts 1 → 0, hot hosts 2 → 1, load spread 45 → 20 points, "
                    "power 850 → 700 W") and "{" not in text


def test_planned_moves_on_the_arrays_give_the_totals_of_a_fresh_build() -> None:
    """One array model for placement and the planner (issue 13): moving VMs on ClusterArrays keeps every
    per-host total (vCPUs, memory, CPU use, count, free GPUs, anti-affinity groups) exactly what the
    arrays of the edited cluster give, to the last bit."""
    from llmvirt.model.arrays import ClusterArrays

    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(60):
        cluster, groups = _random_cluster(rng)
        arrays = ClusterArrays.from_cluster(cluster, groups=groups)
        arrays.totals()
        running = [(h, v) for h in cluster.hosts for v in h.vms if v.running]
        for _ in range(int(rng.integers(1, 6))):
            if not running or len(cluster.hosts) < 2:
                break
            k = int(rng.integers(0, len(running)))
            src, vm = running[k]
            dst_i = int(rng.integers(0, len(cluster.hosts)))
            src.vms.remove(vm)
            cluster.hosts[dst_i].vms.append(vm)
            running[k] = (cluster.hosts[dst_i], vm)
            arrays.move(k, dst_i)
            checked += 1
        fresh = ClusterArrays.from_cluster(cluster, groups=groups).totals()
        got = arrays.totals()
        for name in ("vcpus", "memory", "used", "count", "free_gpus"):
            assert np.array_equal(getattr(got, name), getattr(fresh, name)), name
        assert {g: a.tolist() for g, a in got.groups.items() if a.any()} == {
            g: a.tolist() for g, a in fresh.groups.items() if a.any()}
    assert checked > 100


def test_simulated_arrays_survive_the_round_trip_through_a_cluster() -> None:
    """A simulator-built model and the model built from its Cluster agree on every VM and host (by index)."""
    from llmvirt.model.arrays import ClusterArrays, FleetSetup

    rng = np.random.default_rng(2)
    n, hosts = 40, 6
    cap = rng.choice([2048.0, 4096.0, 8192.0], n)
    used = np.floor(cap * rng.uniform(0.2, 0.9, n))
    setup = FleetSetup(host_cores=16, mhz_per_core=2000.0, host_mem_mib=65536.0)
    sim = ClusterArrays(setup, rng.integers(0, hosts, n), rng.integers(1, 5, n), cap, rng.uniform(0, 4000, n),
                        used, cap.copy(), cap - used, hosts)
    back = ClusterArrays.from_cluster(sim.to_cluster(), setup)
    order = np.argsort(sim.vm_host, kind="stable")  # the cluster lists VMs host by host
    assert back.vm_names == [sim.vm_name(int(v)) for v in order]
    for name in ("vm_host", "vm_vcpus", "vm_mem_cap", "vm_balloon"):
        assert np.array_equal(getattr(back, name), getattr(sim, name)[order]), name
    np.testing.assert_allclose(back.vm_cpu_mhz, sim.vm_cpu_mhz[order])
    assert np.array_equal(back.host_sizes()[0], sim.host_sizes()[0])
    assert np.array_equal(back.host_sizes()[1], sim.host_sizes()[1])
