"""The nb201 task: a NAS-Bench-201 cell written as code; evaluation is a lookup
in a results table the user supplies.

Options (the config's [task] table):
  table    path to the table (required): a CSV (or .csv.gz) with columns arch,
           <dataset>_val, <dataset>_test as in the NAS-Bench-201 release, or a
           JSON {arch: {"val_acc_200": x, "test_acc_200": y}} (.json or .json.gz);
           a JSON table holds one dataset, so the dataset option is ignored for it.
  dataset  cifar10 (default) | cifar100 | imagenet16 (CSV tables only).
  delay_s  seconds each lookup waits, simulating training time (drills, demos); 0 by default.

The search sees validation accuracy (val_acc); the selected best is reported
with test accuracy (test_acc). Candidate code only ever runs in the sandbox:
the harness executes `cell` with symbolic values to read the arch string.
"""
from __future__ import annotations

import json
import random
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from archlab.sandbox.base import INPUT, OUTPUT, PYTHON, Job, Limits
from archlab.tasks.base import Candidate, DesignSpace, TaskOptionError, TaskPack
from archlab.tasks.nb201.arch import EDGES, OPS, arch_fingerprint, arch_to_genome, genome_to_arch, short_name
from archlab.tasks.nb201.table import DATASETS, check_table, index_table, table_format

HERE = Path(__file__).parent

INTERFACE = """\
Define `cell(x0, ops)`: one NAS-Bench-201 cell that returns its output node x3.
Nodes: x0 is the input; x1 = ops on x0; x2 = ops on x0 and x1; x3 = ops on x0, x1 and x2. A node is the sum (+) of its incoming ops.
Ops (each takes one node): ops.none, ops.skip_connect, ops.nor_conv_1x1, ops.nor_conv_3x3, ops.avg_pool_3x3.
Rules: at most one op per pair of nodes (an edge); an edge left out means none; compute both x1 and x2 (a node with no incoming op is e.g. `x2 = ops.none(x0) + ops.none(x1)`); use only ops and +; return x3.
The harness runs `cell` on symbolic values to read the architecture, written |op~0|+|op~0|op~1|+|op~0|op~1|op~2| (node 1, then 2, then 3); its score is that architecture's validation accuracy in the benchmark table.
Example:
def cell(x0, ops):
    x1 = ops.nor_conv_3x3(x0)
    x2 = ops.skip_connect(x0) + ops.nor_conv_1x1(x1)
    x3 = ops.avg_pool_3x3(x0) + ops.none(x1) + ops.nor_conv_3x3(x2)
    return x3"""  # noqa: E501 - prompt text, kept line for line as the models read it

MISSING_TABLE = ("nb201 needs a table: pass --table PATH or set [task] table = ... in archlab.toml; "
                 "a CSV with columns arch, <dataset>_val, <dataset>_test (as in the NAS-Bench-201 release) "
                 "or JSON {arch: {val_acc_200, test_acc_200}}")

# Seeds: well-known cells, none of them the benchmark's optimum.
SEEDS: list[tuple[str, str, str]] = [
    ("resnet", "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|",
     "the ResNet basic block as an NB201 cell (two stacked 3x3 convolutions plus a skip): "
     "ResNet_CODE of the benchmark's code"),
    ("all-conv3x3", "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
     "every edge a 3x3 convolution, the densest and largest cell: AllConv3x3_CODE of the benchmark's code"),
    ("mixed", "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|",
     "a mixed cell using every op once or more: convolutions, skip, pooling and an empty edge"),
]


@cache
def harness_source() -> str:
    return (HERE / "harness.py").read_text()


@cache
def _template() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    return env.get_template("cell.py.j2")


class NB201Space(DesignSpace):
    """Genome {"edges": [6 ops in arch-string order]}; mutation changes exactly one edge
    (regularised evolution's NB201 mutation)."""

    def sample(self, rng: random.Random) -> dict[str, Any]:
        return {"edges": [rng.choice(OPS) for _ in EDGES]}

    def mutate(self, genome: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        edges = list(genome["edges"])
        i = rng.randrange(len(edges))
        edges[i] = rng.choice([op for op in OPS if op != edges[i]])
        return {"edges": edges}

    def neighbours(self, genome: dict[str, Any]) -> list[dict[str, Any]]:
        edges = list(genome["edges"])
        return [{"edges": [*edges[:i], op, *edges[i + 1:]]} for i in range(len(edges)) for op in OPS if op != edges[i]]

    def render(self, genome: dict[str, Any]) -> str:
        # Every edge is written, `none` included, so each node is referenced and the code maps 1:1 to the arch.
        return _template().render(e=list(genome["edges"]), arch=genome_to_arch(genome))

    def describe(self, genome: dict[str, Any]) -> str:
        return short_name(genome)

    def descriptors(self, genome: dict[str, Any]) -> dict[str, Any]:
        """How many convolutions and how many skips the cell has (0-6 each): depth of compute against paths."""
        edges = genome["edges"]
        return {"convs": sum(op.startswith("nor_conv") for op in edges), "skips": edges.count("skip_connect")}


class CellDesign(BaseModel):
    """The cell as data: the op on each edge."""

    edges: list[Literal[OPS]] = Field(  # type: ignore[valid-type]
        min_length=len(EDGES), max_length=len(EDGES),
        description="the op on each edge, in the order x0->x1, x0->x2, x1->x2, x0->x3, x1->x3, x2->x3")


class NB201Task(TaskPack):
    name = "nb201"
    summary = "NAS-Bench-201 cell as code; evaluation is a lookup in a table you supply"
    metric = "val_acc"
    higher_is_better = True
    report_metric = "test_acc"
    metric_directions = {"val_acc": True, "test_acc": True}
    required_symbol = "cell"
    default_budget = 100  # a lookup costs milliseconds
    interface = INTERFACE
    design_hint = ("name the op on each of the six edges, in the order x0->x1, x0->x2, x1->x2, x0->x3, x1->x3, "
                   "x2->x3 (e.g. nor_conv_3x3, skip_connect, nor_conv_1x1, none, avg_pool_3x3, nor_conv_3x3)")
    design_schema = CellDesign
    default_limits = Limits(wall_time_s=30.0, memory_mb=512, cpus=1.0)
    check_wall_s = 30.0  # a trace takes ~0.1 s
    command = [PYTHON, "-I", "-S", f"{INPUT}/harness.py", f"{INPUT}/spec.json", OUTPUT]

    def __init__(self, options: dict[str, Any] | None = None, preset: str | None = None) -> None:
        super().__init__(options, preset)
        self.table_db: Path | None = None  # set by prepare()
        self.table_label = self.dataset     # what the index holds: the dataset, or "json"
        self._space = NB201Space()

    @property
    def dataset(self) -> str:
        return str(self.options.get("dataset") or "cifar10")

    @property
    def table(self) -> Path:
        table = self.options.get("table")
        if not table:
            raise TaskOptionError(MISSING_TABLE)
        return Path(table).expanduser().resolve()

    def validate(self) -> None:
        table = self.table
        if self.dataset not in DATASETS:
            raise TaskOptionError(f"nb201 dataset {self.dataset!r} is unknown; choose one of: {', '.join(DATASETS)}")
        check_table(table, self.dataset)

    def prepare(self, campaign_dir: Path) -> None:
        self.validate()
        self.table_db = index_table(self.table, self.dataset, Path(campaign_dir))
        self.table_label = "json" if table_format(self.table) == "json" else self.dataset

    def fidelity(self) -> dict[str, Any] | None:
        if self.table_db is None:
            return None
        import hashlib

        return {"task": self.name, "index": self.table_db.name,  # content-addressed: an edited table is another
                "harness": hashlib.sha256(harness_source().encode()).hexdigest()[:16]}

    def design_text(self, genome: dict[str, Any]) -> str:
        e = list(genome.get("edges") or [])
        if len(e) != len(EDGES):
            return str(genome)
        return (f"x1 = ops.{e[0]}(x0); x2 = ops.{e[1]}(x0) + ops.{e[2]}(x1); "
                f"x3 = ops.{e[3]}(x0) + ops.{e[4]}(x1) + ops.{e[5]}(x2) (architecture {genome_to_arch(genome)})")

    def static_errors(self, code: str) -> list[str]:
        """The task's checks, plus what a cell must not do: import anything, or run code
        at import time (the harness has no `ops` there)."""
        errors = super().static_errors(code)
        if errors and errors[0].startswith("the code does not parse"):
            return errors
        import ast

        from archlab.pyparse import parse

        for node in parse(code).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                errors.append(f"line {node.lineno}: a cell imports nothing (it uses only `ops` and +); "
                              f"remove `{ast.unparse(node)}`")
            elif isinstance(node, ast.Expr) and not isinstance(node.value, ast.Constant):
                errors.append(f"line {node.lineno}: remove the top-level `{ast.unparse(node)[:60]}`: it runs when "
                              "the module is imported, where `ops` does not exist; the module only defines `cell`")
        return errors

    def seeds(self) -> list[Candidate]:
        out = []
        for name, arch, why in SEEDS:
            genome = arch_to_genome(arch)
            out.append(Candidate(name=name, code=self._space.render(genome), motivation=why, genome=genome))
        return out

    @property
    def space(self) -> NB201Space:
        return self._space

    def check_job(self, code: str, workdir: Path, seed: int, limits: Limits | None = None) -> Job:
        """Trace the cell. result.json: {"status": "ok", "arch", "fingerprint", "params": 0}
        or {"status": "integrity"|"error", "reason"}."""
        return self._job("check", code, workdir, seed, limits, {})

    def train_job(self, code: str, workdir: Path, seed: int, limits: Limits | None = None) -> Job:
        """Trace the cell and look it up. result.json: {"status": "ok", "arch", "fingerprint",
        "metrics": {"val_acc", "test_acc", "arch"}} or {"status": "integrity"|"error", "reason"}."""
        if self.table_db is None:
            raise RuntimeError("NB201Task.prepare(campaign_dir) must run before train_job: it indexes the table")
        return self._job("train", code, workdir, seed, limits, {"table.sqlite": self.table_db})

    def _job(self, mode: str, code: str, workdir: Path, seed: int, limits: Limits | None, data: dict[str, Path]) -> Job:
        spec = {"task": self.name, "mode": mode, "seed": seed, "dataset": self.table_label,
                "candidate": "candidate.py", "table": "table.sqlite", "delay_s": float(self.options.get("delay_s", 0))}
        return Job(name=f"nb201-{mode}", workdir=Path(workdir), command=list(self.command),
                   files={"harness.py": harness_source(), "candidate.py": code, "spec.json": json.dumps(spec)},
                   data=dict(data), limits=limits or replace(self.default_limits, gpus=[]))


TASK = NB201Task

__all__ = ["TASK", "NB201Space", "NB201Task", "arch_fingerprint", "arch_to_genome", "genome_to_arch", "harness_source",
           "short_name"]
