"""The nb201 task pack: tracing cells to arch strings, the table index, and the
harness run for real through the process backend."""
from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import itertools
import json
import random
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from archlab.sandbox.process import ProcessBackend
from archlab.tasks import TaskOptionError, get_task, nb201
from archlab.tasks.nb201 import NB201Task, arch_to_genome, genome_to_arch
from archlab.tasks.nb201.arch import N_ARCHS, OPS
from archlab.tasks.nb201.table import read_index

SHARED_TABLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nb201" / "nb201_genius_combined.csv.gz"
ALL_ARCHS = [genome_to_arch({"edges": list(e)}) for e in itertools.product(OPS, repeat=6)]


def accs(i: int, dataset: str) -> tuple[float, float]:
    """Made-up, deterministic, distinct per dataset."""
    base = 10.0 if dataset == "cifar10" else 20.0
    return round(base + (i * 7919 % 6000) / 100, 4), round(base + (i * 104729 % 6000) / 100, 4)


@pytest.fixture(scope="module")
def harness():
    """The harness module, imported into the test process to trace thousands of cells fast."""
    keep = sys.dont_write_bytecode
    spec = importlib.util.spec_from_file_location("nb201_harness", Path(nb201.__file__).parent / "harness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.dont_write_bytecode = keep
    return module


def trace(harness, code: str) -> str:
    ns: dict = {}
    exec(compile(code, "candidate.py", "exec"), ns)
    return harness.arch_of(ns["cell"], "candidate.py")


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    d = tmp_path_factory.mktemp("tables")
    with open(d / "full.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "cifar10_val", "cifar10_test", "cifar100_val", "cifar100_test"])
        for i, arch in enumerate(ALL_ARCHS):
            w.writerow([arch, *accs(i, "cifar10"), *accs(i, "cifar100")])
    with open(d / "full.csv", "rb") as src, gzip.open(d / "full.csv.gz", "wb") as dst:
        dst.write(src.read())
    subset = {arch: {"val_acc_200": accs(i, "json")[0], "test_acc_200": accs(i, "json")[1]}
              for i, arch in enumerate(ALL_ARCHS) if i % 2 == 0}
    (d / "subset.json").write_text(json.dumps(subset))
    return d


@pytest.fixture(scope="module")
def task(tables, tmp_path_factory):
    t = NB201Task({"table": str(tables / "full.csv.gz"), "dataset": "cifar100"})
    t.prepare(tmp_path_factory.mktemp("campaign"))
    return t


def run(job):
    return ProcessBackend().run(job)


# -- arch strings and the design space -------------------------------------------------

def test_arch_string_round_trip():
    assert len(set(ALL_ARCHS)) == N_ARCHS == 15_625
    assert all(genome_to_arch(arch_to_genome(a)) == a for a in ALL_ARCHS[::97])
    edges = ["nor_conv_3x3", "skip_connect", "nor_conv_1x1", "avg_pool_3x3", "none", "nor_conv_3x3"]
    assert genome_to_arch({"edges": edges}) == \
        "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
    for bad in ["|nor_conv_3x3~0|", "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|"]:
        with pytest.raises(ValueError):
            arch_to_genome(bad)


def test_every_rendered_genome_traces_back_to_its_arch(harness):
    space = NB201Task().space
    for arch in ALL_ARCHS:  # all 15,625, in-process with the harness's own tracer
        assert trace(harness, space.render(arch_to_genome(arch))) == arch
    assert space.describe(arch_to_genome(ALL_ARCHS[-1])) == "p-p-p-p-p-p"


def test_mutation_changes_exactly_one_edge():
    space, rng = NB201Task().space, random.Random(0)
    for _ in range(500):
        g = space.sample(rng)
        m = space.mutate(g, rng)
        assert sum(a != b for a, b in zip(g["edges"], m["edges"], strict=True)) == 1
        assert arch_to_genome(genome_to_arch(m)) == m


def test_seeds_are_valid_cells(harness):
    t = NB201Task()
    seeds = t.seeds()
    assert 2 <= len(seeds) <= 3 and len({s.name for s in seeds}) == len(seeds)
    for s in seeds:
        assert t.static_errors(s.code) == []
        assert trace(harness, s.code) == genome_to_arch(s.genome)


# -- tracing hand-written cells ----------------------------------------------------------

EXAMPLE_ARCH = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
EQUIVALENT_CELLS = [
    # the interface's example
    """def cell(x0, ops):
    x1 = ops.nor_conv_3x3(x0)
    x2 = ops.skip_connect(x0) + ops.nor_conv_1x1(x1)
    x3 = ops.avg_pool_3x3(x0) + ops.none(x1) + ops.nor_conv_3x3(x2)
    return x3
""",
    # renamed variables, terms reordered, the none edge left out, sum()
    """def cell(inp, o):
    a = o.nor_conv_3x3(inp)
    b = o.nor_conv_1x1(a) + o.skip_connect(inp)
    return sum([o.nor_conv_3x3(b), o.avg_pool_3x3(inp)])
""",
    # functional style: node 1 computed twice is still one node; += builds a node
    """def cell(x, ops):
    mid = ops.nor_conv_1x1(ops.nor_conv_3x3(x)) + ops.skip_connect(x)
    out = ops.avg_pool_3x3(x)
    out += ops.nor_conv_3x3(mid)
    return out
""",
]


@pytest.mark.parametrize("code", EQUIVALENT_CELLS)
def test_equivalent_cells_give_the_same_arch(harness, code):
    assert trace(harness, code) == EXAMPLE_ARCH


def test_the_interface_example_is_a_valid_cell(harness):
    example = NB201Task.interface.split("Example:\n", 1)[1]
    assert NB201Task().static_errors(example) == []
    assert trace(harness, example) == EXAMPLE_ARCH


def test_a_dead_node_still_counts(harness):
    code = """def cell(x0, ops):
    x1 = ops.nor_conv_3x3(x0)
    x2 = ops.nor_conv_1x1(x0) + ops.avg_pool_3x3(x1)
    return ops.skip_connect(x0) + ops.nor_conv_3x3(x1)
"""
    assert trace(harness, code) == ("|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|"
                                    "+|skip_connect~0|nor_conv_3x3~1|none~2|")


INVALID_CELLS = {
    "unknown op ops.conv_5x5": "x1 = ops.conv_5x5(x0)\n    x2 = ops.none(x0) + ops.none(x1)\n"
                               "    return ops.none(x2) + ops.none(x1) + ops.none(x0)",
    "must be applied to a node": "x1 = ops.nor_conv_3x3(3)\n    return x1",
    "two ops on the same edge": "x1 = ops.nor_conv_3x3(x0) + ops.skip_connect(x0)\n"
                                "    x2 = ops.none(x0) + ops.none(x1)\n"
                                "    return ops.none(x0) + ops.none(x1) + ops.none(x2)",
    "returns x0 unchanged": "return x0",
    "must return its output node x3": "x1 = ops.nor_conv_3x3(x0)\n    return None",
    "computes 2 distinct node value(s)": "x1 = ops.nor_conv_3x3(x0)\n    return ops.nor_conv_3x3(x1)",
    "computes 4 distinct node value(s)": "x1 = ops.nor_conv_3x3(x0)\n    x2 = ops.none(x0) + ops.none(x1)\n"
                                         "    junk = ops.avg_pool_3x3(x1) + ops.nor_conv_1x1(x0)\n"
                                         "    return ops.none(x0) + ops.none(x1) + ops.none(x2)",
    "also added into a sum": "x1 = ops.nor_conv_3x3(x0)\n    x2 = x1 + ops.nor_conv_1x1(x1)\n"
                             "    return ops.none(x0) + ops.none(x1) + ops.none(x2)",
    "returned node also feeds an op": "x1 = ops.nor_conv_3x3(x0)\n    x2 = ops.none(x0) + ops.none(x1)\n"
                                      "    x3 = ops.none(x0) + ops.none(x1) + ops.none(x2)\n"
                                      "    y = ops.nor_conv_3x3(x3)\n    return x3",
    "returns a node computed before another": "x1 = ops.nor_conv_3x3(x0)\n"
                                              "    x3 = ops.none(x0) + ops.nor_conv_1x1(x1)\n"
                                              "    x2 = ops.skip_connect(x1)\n    return x3",
    "x0 cannot be added": "x1 = x0 + ops.nor_conv_3x3(x0)\n    return x1",
}


@pytest.mark.parametrize("reason", sorted(INVALID_CELLS))
def test_invalid_cells_are_rejected_with_their_reason(harness, reason):
    with pytest.raises(harness.CellError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        trace(harness, "def cell(x0, ops):\n    " + INVALID_CELLS[reason] + "\n")


# -- options and the table ----------------------------------------------------------------

def test_option_errors_are_clear(tables, tmp_path):
    with pytest.raises(TaskOptionError, match=r"--table PATH.*\[task\] table"):
        get_task("nb201", {}).validate()
    with pytest.raises(TaskOptionError, match="nowhere.csv"):
        NB201Task({"table": str(tmp_path / "nowhere.csv")}).validate()
    with pytest.raises(TaskOptionError, match="cifar10, cifar100, imagenet16"):
        NB201Task({"table": str(tables / "full.csv"), "dataset": "mnist"}).validate()
    with pytest.raises(TaskOptionError, match=r"imagenet16_val, imagenet16_test.*its columns are: arch, cifar10_val"):
        NB201Task({"table": str(tables / "full.csv.gz"), "dataset": "imagenet16"}).validate()
    (tmp_path / "bad.csv").write_text("arch,cifar10_val,cifar10_test\n|conv~0|,1,2\n")
    with pytest.raises(TaskOptionError, match="line 2.*not an NB201 arch string"):
        NB201Task({"table": str(tmp_path / "bad.csv")}).prepare(tmp_path)
    with pytest.raises(RuntimeError, match="prepare"):
        NB201Task({"table": str(tables / "full.csv")}).train_job("", tmp_path, 0)


def test_index_is_cached_by_content_and_read_only(tables, tmp_path):
    t = NB201Task({"table": str(tables / "full.csv"), "dataset": "cifar10"})
    t.prepare(tmp_path)
    first = t.table_db
    assert first.name.startswith("nb201-cifar10-") and first.suffix == ".sqlite"
    start = time.perf_counter()
    t.prepare(tmp_path)
    assert t.table_db == first and time.perf_counter() - start < 0.1
    meta, rows = read_index(first)
    assert meta["rows"] == "15625" and len(rows) == 15_625
    assert dict((a, (v, s)) for a, v, s in rows)[ALL_ARCHS[7]] == accs(7, "cifar10")
    with pytest.raises(sqlite3.OperationalError):
        sqlite3.connect(f"file:{first}?mode=ro", uri=True).execute("DELETE FROM nb201")
    other = NB201Task({"table": str(tables / "full.csv"), "dataset": "cifar100"})
    other.prepare(tmp_path)
    assert other.table_db != first  # one index per dataset


# -- the harness through the process backend ------------------------------------------------

def test_check_and_train_jobs_return_the_tables_numbers(task, tmp_path):
    rng = random.Random(1)
    for k in range(4):
        genome = task.space.sample(rng)
        arch = genome_to_arch(genome)
        code = task.space.render(genome)
        check = run(task.check_job(code, tmp_path / f"c{k}", seed=0))
        assert check.status == "ok", check.reason
        assert check.result == {"status": "ok", "arch": arch, "params": 0,
                                "fingerprint": hashlib.sha256(arch.encode()).hexdigest()}
        events: list[dict] = []
        train = ProcessBackend().run(task.train_job(code, tmp_path / f"t{k}", seed=0), on_event=events.append)
        assert train.status == "ok", train.reason
        val, test = accs(ALL_ARCHS.index(arch), "cifar100")
        assert train.result["metrics"] == {"val_acc": val, "test_acc": test, "arch": arch}
        assert task.score(train.result["metrics"]) == val
        assert {"event": "metric", "val_acc": val, "test_acc": test} in events


def test_invalid_and_broken_candidates_through_the_backend(task, tmp_path):
    res = run(task.check_job("def cell(x0, ops):\n    return ops.nor_conv_3x3(x0) + ops.skip_connect(x0)\n",
                             tmp_path / "a", 0))
    assert res.status == "integrity" and "two ops on the same edge" in res.reason and "line 2" in res.reason
    res = run(task.train_job("def cell(x0, ops):\n    return x0 * 2\n", tmp_path / "b", 0))
    assert res.status == "crash" and "the cell raised TypeError" in res.reason
    res = run(task.check_job("x = 1\n", tmp_path / "c", 0))
    assert res.status == "crash" and "must define a function cell(x0, ops)" in res.reason
    res = run(task.check_job("def cell(x0, ops):\n    return (\n", tmp_path / "d", 0))
    assert res.status == "crash" and "importing the candidate failed: SyntaxError" in res.reason


def test_a_candidate_cannot_fake_its_metrics(task, tmp_path):
    """Candidate code runs in a forked child; the parent alone looks up and writes result.json."""
    patcher = (EQUIVALENT_CELLS[0]
               + "import sys\nsys.modules['__main__'].lookup = lambda db, arch: (100.0, 100.0, None)\n")
    res = run(task.train_job(patcher, tmp_path / "a", 0))
    assert res.status == "ok" and res.result["metrics"]["val_acc"] == accs(ALL_ARCHS.index(EXAMPLE_ARCH), "cifar100")[0]
    writer = ("import sys, json\nopen(sys.argv[2] + '/result.json', 'w').write(json.dumps("
              "{'status': 'ok', 'metrics': {'val_acc': 100.0}}))\n__import__('os')._exit(0)\n")
    res = run(task.train_job(writer, tmp_path / "b", 0))
    assert res.status == "crash" and "ended without an answer" in res.reason


def test_json_table_ignores_dataset_and_reports_missing_archs(tables, tmp_path):
    t = NB201Task({"table": str(tables / "subset.json"), "dataset": "imagenet16"})
    t.validate()
    t.prepare(tmp_path)
    assert t.table_db.name.startswith("nb201-json-")
    present, absent = ALL_ARCHS[10], ALL_ARCHS[11]
    res = run(t.train_job(t.space.render(arch_to_genome(present)), tmp_path / "p", 0))
    assert res.status == "ok" and res.result["metrics"]["val_acc"] == accs(10, "json")[0]
    res = run(t.train_job(t.space.render(arch_to_genome(absent)), tmp_path / "a", 0))
    assert res.status == "crash" and f"arch {absent} is not in the table" in res.reason


def test_harness_is_fast(task, tmp_path):
    code = task.seeds()[0].code
    walls = []
    for k in range(5):
        res = run(task.train_job(code, tmp_path / str(k), 0))
        assert res.ok
        walls.append(res.wall_s)
    assert sorted(walls)[2] < 1.0  # measured ~0.04 s on the dev box


@pytest.mark.skipif(not SHARED_TABLE.is_file(), reason=f"the NAS-Bench-201 table is not at {SHARED_TABLE}")
def test_shared_nas_bench_201_table(tmp_path):
    t = NB201Task({"table": str(SHARED_TABLE), "dataset": "cifar10"})
    t.validate()
    t.prepare(tmp_path)
    meta, rows = read_index(t.table_db)
    assert meta["rows"] == "15625" and len(rows) == 15_625
    best = max(rows, key=lambda r: r[2])
    assert best[2] == pytest.approx(94.3733)
    res = run(t.train_job(t.space.render(arch_to_genome(best[0])), tmp_path / "best", 0))
    assert res.ok and res.result["metrics"]["test_acc"] == pytest.approx(94.3733)
