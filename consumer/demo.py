"""``runstream demo``: a small training sweep, logged live, for a first look.

Brings the embedded stack up if none is running here (``runstream up``, started in the
background so the run page stays up after the demo), then trains a toy model (gradient
descent on a noisy line) for a few learning rates: one child run per learning rate
with scalars, a list, rows, a table, an image and a file, under a parent run that
compares them.  Shows a progress bar, then the run page's URL and a summary table.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Final

import click

from runstream import Experiment, Run, Workspace
from runstream.config import DATA_DIR_NAME, Settings, read_instance
from runstream.connection import connect
from runstream.consumer.reader import collectors_alive
from runstream.errors import ConfigError
from runstream.keys import Keys
from runstream.logconfig import configure_logging

__all__ = ["demo_command", "train"]

LEARNING_RATES: Final = (0.3, 0.1, 0.03, 0.01)
UP_TIMEOUT: Final = 60.0


# ------------------------------------------------------------------ the stack


def _collector_alive(settings: Settings) -> bool:
    async def check() -> bool:
        async with connect(settings.redis_url, retries=0) as client:
            keys = Keys(settings.workspace, settings.key_prefix, settings.shards)
            return bool(await collectors_alive(client, keys, time.time()))

    try:
        return asyncio.run(check())
    except Exception:  # noqa: BLE001  # unreachable or refusing Redis: no stack to use
        return False


def ensure_stack(data_dir: Path) -> Settings:
    """Settings of a running stack: the configured one if a collector serves it, else a
    ``runstream up`` started here in the background (left running for the run page)."""
    try:
        settings = Settings.from_config()
        if _collector_alive(settings):
            return settings
    except ConfigError:
        pass
    click.echo(f"starting runstream in the background (data in {data_dir}; `runstream down` stops it)")
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "up.log"
    with log.open("ab") as output:
        subprocess.Popen(  # noqa: S603  # our own command
            [
                sys.executable,
                "-c",
                "from runstream.consumer.cli import main; main()",
                "up",
                "--data-dir",
                str(data_dir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,  # outlives the demo, and the demo's Ctrl-C
        )
    deadline = time.monotonic() + UP_TIMEOUT
    while True:
        instance = read_instance(data_dir)
        if instance is not None and instance.alive():
            settings = Settings.from_config()
            if settings.server_url is None:  # a Redis from the environment: the server is ours
                settings = settings.with_changes(server_url=instance.server_url)
            return settings
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:]
            raise click.ClickException(f"runstream up did not start within {UP_TIMEOUT:.0f} s:\n{tail}")
        time.sleep(0.1)


# ----------------------------------------------------------------- the training


def _png(width: int, height: int, shade: list[list[float]]) -> bytes:
    """An RGB PNG of ``shade`` (rows of values in 0..1): blue to orange."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = b"".join(
        b"\x00" + bytes(c for v in row for c in (int(40 + 215 * v), int(90 + 60 * v), int(220 - 190 * v)))
        for row in shade
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def train(run: Run, lr: float, epochs: int, folder: Path, pace: float, tick: Callable[[int], None] | None) -> float:
    """Fit y = 2x + 1 to noisy points by gradient descent, logging as a training script does."""
    rng = random.Random(7)  # noqa: S311  # toy data, not secrets
    xs = [i / 50 for i in range(50)]
    ys = [2 * x + 1 + rng.gauss(0, 0.1) for x in xs]
    w = b = 0.0
    run.tag("learning_rate", str(lr))
    run.log("learning_rate", lr)
    loss = math.inf
    for _ in range(epochs):
        errors = [w * x + b - y for x, y in zip(xs, ys, strict=True)]
        loss = sum(e * e for e in errors) / len(errors)
        w -= lr * 2 * sum(e * x for e, x in zip(errors, xs, strict=True)) / len(errors)
        b -= lr * 2 * sum(errors) / len(errors)
        run.log("loss", loss)
        run.log("accuracy", max(0.0, 1.0 - math.sqrt(loss)))
        run.log_row("weights", w=w, b=b)
        if tick is not None:
            tick(1)
        time.sleep(pace)  # slow enough to watch the charts grow
    run.log_list("residuals", [round(w * x + b - y, 4) for x, y in zip(xs, ys, strict=True)])
    run.log_table("fit", {"x": xs[::10], "y": ys[::10], "predicted": [round(w * x + b, 4) for x in xs[::10]]})
    image = folder / f"fit_{lr}.png"
    image.write_bytes(
        _png(40, 20, [[min(1.0, abs(w * c / 40 + b - 2 * r / 20)) for c in range(40)] for r in range(20)])
    )
    run.log_image("fit plot", path=image)
    model = folder / f"model_{lr}.json"
    model.write_text(json.dumps({"w": w, "b": b, "learning_rate": lr, "loss": loss}))
    run.upload_file("outputs/model.json", model)
    return loss


@click.command("demo")
@click.option("--experiment", default="demo", show_default=True, help="The experiment the sweep goes into.")
@click.option("--epochs", type=click.IntRange(1, 10_000), default=40, show_default=True)
@click.option("--pace", type=float, default=0.02, show_default=True, help="Seconds between two epochs.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def demo_command(experiment: str, epochs: int, pace: float, data_dir: Path | None) -> None:
    """Run a small training sweep and show it live."""
    configure_logging(level="warning")
    settings = ensure_stack((data_dir or Path(DATA_DIR_NAME)).absolute())
    workspace = Workspace.from_settings(settings)
    results: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp, Experiment(workspace, experiment).start_logging() as sweep:
        click.echo(f"run page: {sweep.get_portal_url()}")
        sweep.tag("kind", "sweep")
        sweep.log_list("learning rates", list(LEARNING_RATES))
        with click.progressbar(length=len(LEARNING_RATES) * epochs, label="training") as bar:
            for lr in LEARNING_RATES:
                with sweep.child_run(f"lr={lr}") as child:
                    loss = train(child, lr, epochs, Path(tmp), pace, bar.update)
                sweep.log_row("final loss by learning rate", learning_rate=lr, loss=loss)
                results.append((child.id, lr, loss))
        best = min(results, key=lambda r: r[2])
        sweep.log("best learning rate", best[1])
    details = sweep.wait_for_completion(timeout=60)
    click.echo(f"\nsweep {sweep.id}: {details['status']}")
    click.echo(f"{'RUN':<36}  {'LR':>6}  {'FINAL LOSS':>10}")
    for run_id, lr, loss in results:
        click.echo(f"{run_id:<36}  {lr:>6}  {loss:>10.5f}" + ("  <- best" if run_id == best[0] else ""))
    click.echo(f"\nsee it: {sweep.get_portal_url()}")
