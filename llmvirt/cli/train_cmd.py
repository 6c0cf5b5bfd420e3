"""``llmvirt train``: train a placement policy in the simulator and write a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmvirt.cli.common import out
from llmvirt.errors import UsageError


def train(
    trace: Annotated[Path, typer.Option("--trace", help="Bitbrains directory or .tar.gz, or a generic .csv/.parquet.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Checkpoint directory to write, e.g. policies/mine.")],
    scenario: Annotated[str, typer.Option(help="Scenario to learn in (balance).")] = "balance",
    seed: Annotated[int, typer.Option(help="Seed: the run is reproducible from it.")] = 0,
    samples: Annotated[int, typer.Option(help="Decisions sampled from the training replay.")] = 3000,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 60,
) -> None:
    """Imitate a lookahead planner on the training split; write safetensors + JSON and a learning curve."""
    from llmvirt.policy.train import TrainConfig
    from llmvirt.policy.train import train as run
    from llmvirt.sim import traces

    if scenario != "balance":
        raise UsageError(f"scenario {scenario!r} has no trainer yet: use balance")
    if samples < 10 or epochs < 1:
        raise UsageError("--samples must be at least 10 and --epochs at least 1")
    tr = traces.load_generic(trace) if trace.suffix in (".csv", ".parquet") else traces.load_bitbrains(trace)
    metrics = run(tr, out_dir, TrainConfig(seed=seed, samples=samples, epochs=epochs), scenario, trace.name)
    out.print(f"wrote {out_dir}/model.safetensors, policy.json, learning_curve.csv/.png: {metrics}")
