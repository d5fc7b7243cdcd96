"""The SLURM profile against a live single-node SLURM cluster (ci/slurm-up.sh, root only).

One grid (config/ci_slurm.yaml) runs through SLURM with profiles/slurm-ci and, at the same time, locally
in another copy of the workflow. During the SLURM run one PANet training job is cancelled with scancel
half-way (after its first checkpoint); the rest of the grid goes on (keep-going). A second run of the
same command then resumes that training and completes the grid, and its tables must equal the local
run's. Everything runs under `timeout`, and ci/slurm-down.sh stops the cluster at the end.

    pytest -m slurm -v -s       (as root; -s shows the cluster log paths and the timings; `.ci/run`
                                 sets FSSEG_REQUIRE_SLURM=1, which turns a skip into a failure)
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
STATE_FILE = Path(os.environ.get("FSSEG_SLURM_STATE_FILE", "/tmp/fsseg-slurm-ci.path"))
CONFIG = "config/ci_slurm.yaml"
RESULTS, REPORTS, LOGS = "results-ci-slurm", "reports-ci-slurm", "logs-ci-slurm"
WORKFLOW_RUN_TIMEOUT = 240  # seconds, each snakemake call (the whole module stays under 5 minutes)

# The training job cancelled half-way: PANet trains 40 steps with a checkpoint every 5 in this grid.
VICTIM_RUN = f"{RESULTS}/synthetic/panet-default/resnet18/fold0/shot1/seed1"
VICTIM_COMMENT = "rule_train_wildcards_synthetic_panet_default_resnet18_0_1_1"  # the plugin's --comment
VICTIM_LOG = f"{LOGS}/synthetic/train/panet-default_resnet18_fold0_shot1_seed1.log"

DETERMINISTIC_TABLES = ("main_miou", "main_fbiou", "ablation", "significance")
TIMING_COLUMNS = {"latency_ms_median", "latency_ms_p90", "fps", "peak_memory_mb"}  # of the efficiency table

TIMINGS: dict[str, float] = {}


def _require(reason: str) -> None:
    """Skip, or fail where the SLURM test must run (CI sets FSSEG_REQUIRE_SLURM=1)."""
    if os.environ.get("FSSEG_REQUIRE_SLURM") == "1":
        pytest.fail(f"the SLURM test must run here (FSSEG_REQUIRE_SLURM=1) but cannot: {reason}")
    pytest.skip(reason)


def _tail(text: str, n: int = 4000) -> str:
    return text[-n:]


def _copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in ("Snakefile", "workflow", "config", "profiles"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    return dest


class Workflow:
    """A snakemake run in the background, bounded by `timeout` (and killed with its process group)."""

    def __init__(self, workdir: Path, args: list[str], env: dict[str, str], name: str) -> None:
        self.workdir, self.name = workdir, name
        self.log_path = workdir / f"{name}.out"
        self.started = time.monotonic()
        self._log = self.log_path.open("w")
        command = ["timeout", "-k", "10", str(WORKFLOW_RUN_TIMEOUT), *SNAKEMAKE, *args]
        self.proc = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        # records the wall time when the run ends, not when a test gets round to waiting for it
        self._timer = threading.Thread(target=self._time_it, daemon=True)
        self._timer.start()

    def _time_it(self) -> None:
        self.proc.wait()
        TIMINGS[self.name] = time.monotonic() - self.started

    def wait(self) -> int:
        try:
            rc = self.proc.wait(timeout=WORKFLOW_RUN_TIMEOUT + 30)
        finally:
            self.stop()
        self._timer.join()
        assert rc not in (124, 137), f"{self.name}: snakemake ran past {WORKFLOW_RUN_TIMEOUT}s\n{self.tail}"
        return rc

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group of the process this test started
            self.proc.wait()
        self._log.close()

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    @property
    def tail(self) -> str:
        return _tail(self.output)


def _run(command: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class Cluster:
    state: Path
    env: dict[str, str]

    @property
    def ctld_log(self) -> str:
        return (self.state / "slurmctld.log").read_text()

    def squeue(self, *args: str) -> str:
        result = _run(["squeue", "-h", *args], self.env, 30)
        assert result.returncode == 0, f"squeue failed: {result.stderr}"
        return result.stdout


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        _require("needs root: ci/slurm-up.sh installs and starts SLURM and munge")
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        _require("SLURM is not installed and apt-get is not available to install it")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("SLURM_CONF", None)
    started = time.monotonic()
    try:
        up = _run(["bash", str(REPO / "ci" / "slurm-up.sh")], env, 600)
        print(up.stdout, up.stderr, sep="")
        assert up.returncode == 0, f"ci/slurm-up.sh failed:\n{up.stdout}\n{up.stderr}"
        state = Path(STATE_FILE.read_text().strip())
        TIMINGS["slurm-up"] = time.monotonic() - started
        yield Cluster(state, {**env, "SLURM_CONF": str(state / "slurm.conf")})
    finally:
        down = _run(["bash", str(REPO / "ci" / "slurm-down.sh")], env, 120)
        print(down.stdout, down.stderr, sep="")
        TIMINGS["SLURM test module (from slurm-up to slurm-down)"] = time.monotonic() - started
        print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in TIMINGS.items()))
        assert down.returncode == 0, f"ci/slurm-down.sh failed:\n{down.stdout}\n{down.stderr}"


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workflow]:
    """The same grid run locally (one thread per job), started now and waited for by the comparison."""
    workdir = _copy_workflow(tmp_path_factory.mktemp("local") / "repo")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = Workflow(workdir, ["--cores", "2", "--configfile", CONFIG], env, "local run")
    yield run
    run.stop()


@dataclass
class SlurmRuns:
    workdir: Path
    first: str                 # snakemake output of the run with the cancelled job
    first_rc: int
    second: str                # snakemake output of the rerun
    second_rc: int
    victim_job: str            # SLURM id of the cancelled training job
    victim_state: str          # its state in SLURM after the first run
    after_cancel: dict[str, bool] = field(default_factory=dict)
    checkpoint_iteration: int | None = None
    victim_files: list[str] = field(default_factory=list)
    log_rows_ok: bool = True


def _cancel_victim(cluster: Cluster, workdir: Path, run: Workflow) -> str:
    """Wait until the victim's training is RUNNING and has written a checkpoint; scancel it."""
    checkpoint = workdir / VICTIM_RUN / "checkpoint.pt"
    deadline = time.monotonic() + WORKFLOW_RUN_TIMEOUT
    while time.monotonic() < deadline:
        if run.proc.poll() is not None:
            pytest.fail(f"the SLURM run ended before its PANet training could be cancelled:\n{run.tail}")
        if checkpoint.is_file():
            for line in cluster.squeue("-t", "RUNNING", "-o", "%i|%k").splitlines():
                job, _, comment = line.partition("|")
                if comment.strip() == VICTIM_COMMENT:
                    result = _run(["scancel", job.strip()], cluster.env, 30)
                    assert result.returncode == 0, f"scancel {job} failed: {result.stderr}"
                    return job.strip()
        time.sleep(0.1)
    pytest.fail(f"no RUNNING training job with comment {VICTIM_COMMENT} and a checkpoint within the limit")


@pytest.fixture(scope="module")
def slurm_runs(cluster: Cluster, local_run: Workflow, tmp_path_factory: pytest.TempPathFactory) -> SlurmRuns:
    import torch

    workdir = _copy_workflow(tmp_path_factory.mktemp("slurm") / "repo")
    args = ["--profile", "profiles/slurm-ci", "--configfile", CONFIG]

    first = Workflow(workdir, args, cluster.env, "SLURM run with scancel")
    victim = _cancel_victim(cluster, workdir, first)
    first_rc = first.wait()
    state = cluster.squeue("-t", "all", "-j", victim, "-o", "%T").strip()  # MinJobAge=300 keeps it listed

    run_dir = workdir / VICTIM_RUN
    checkpoint = run_dir / "checkpoint.pt"
    iteration = None
    if checkpoint.is_file():
        iteration = int(torch.load(checkpoint, map_location="cpu", weights_only=False)["iteration"])
    log_rows_ok = True
    if (run_dir / "train_log.jsonl").is_file():
        for line in (run_dir / "train_log.jsonl").read_text().splitlines():
            try:
                json.loads(line)
            except json.JSONDecodeError:
                log_rows_ok = False
    after_cancel = {
        "train_summary": (run_dir / "train_summary.json").exists(),
        "model": (run_dir / "model.pt").exists(),
        "evaluation": any((run_dir / "eval").glob("*/summary.json")),
        "report": (workdir / REPORTS / "synthetic" / "tables" / "main_miou.csv").exists(),
    }
    victim_files = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []

    second = Workflow(workdir, args, cluster.env, "SLURM rerun")
    second_rc = second.wait()
    return SlurmRuns(
        workdir, first.output, first_rc, second.output, second_rc, victim, state, after_cancel,
        iteration, victim_files, log_rows_ok,
    )


def _slurm_job_logs(workdir: Path) -> dict[str, list[str]]:
    """rule → SLURM job ids, from the plugin's per-job logs (.snakemake/slurm_logs/rule_R/W/ID.log)."""
    jobs: dict[str, list[str]] = {}
    for log in sorted((workdir / ".snakemake" / "slurm_logs").glob("rule_*/*/*.log")):
        jobs.setdefault(log.parts[-3].removeprefix("rule_"), []).append(log.stem)
    return jobs


def test_jobs_ran_through_slurm(slurm_runs: SlurmRuns, cluster: Cluster):
    assert slurm_runs.second_rc == 0, f"the SLURM rerun failed:\n{_tail(slurm_runs.second)}"
    jobs = _slurm_job_logs(slurm_runs.workdir)
    # 2 train seeds × (panet, dsmfnet, dsmfnet prior_off), one evaluation each, one bench per method
    # variant, predictions of the 2 main methods; the cancelled training ran twice
    counts = {rule: len(ids) for rule, ids in jobs.items()}
    assert counts == {"train": 7, "evaluate": 6, "bench": 3, "predict": 2}, counts
    ctld = cluster.ctld_log
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", slurm_runs.first + slurm_runs.second)
    for rule, ids in jobs.items():
        for job in ids:
            # started by the main scheduler ("sched: Allocate") or by the backfill scheduler, which
            # takes jobs queued while the node was full ("sched/backfill: _start_job: Started")
            started = (
                rf"sched: Allocate JobId={job} NodeList="
                rf"|sched/backfill: _start_job: Started JobId={job} "
            )
            allocated = re.search(started, ctld)
            assert allocated, f"{rule} job {job} was never started according to slurmctld.log"
            if job != slurm_runs.victim_job:
                succeeded = f"_job_complete: JobId={job} WEXITSTATUS 0" in ctld
                assert succeeded, f"{rule} job {job} did not succeed according to slurmctld.log"
    assert sorted(submitted, key=int) == sorted((j for ids in jobs.values() for j in ids), key=int)
    # data preparation, manifests, aggregation and the report stay local rules
    for rule in ("prepare", "manifest", "aggregate", "report_spec", "report"):
        assert rule not in jobs, f"rule {rule} was submitted to SLURM; it should be a local rule"


def test_cancelled_job_leaves_no_output_and_the_rerun_resumes_it(slurm_runs: SlurmRuns):
    runs = slurm_runs
    assert runs.victim_state == "CANCELLED", f"SLURM job {runs.victim_job} is {runs.victim_state!r}"
    assert runs.first_rc != 0, "the run with a cancelled job should report the failure"
    reported = rf"SLURM-job '{runs.victim_job}' failed, SLURM status is: 'CANCELLED'"
    assert re.search(reported, runs.first), _tail(runs.first)
    # keep-going: everything else ran; the cancelled run's declared output and what needs it did not
    assert runs.after_cancel == {"train_summary": False, "model": False, "evaluation": False, "report": False}
    assert runs.checkpoint_iteration is not None, f"no checkpoint.pt to resume from: {runs.victim_files}"
    assert 5 <= runs.checkpoint_iteration < 40
    assert runs.log_rows_ok, "train_log.jsonl of the cancelled run has a half-written line"
    # nothing but the run's config, log, checkpoint (and hidden temp files of an interrupted atomic write)
    assert {f for f in runs.victim_files if not f.startswith(".")} <= {
        "config.yaml", "train_log.jsonl", "checkpoint.pt"
    }, runs.victim_files
    assert runs.second_rc == 0, f"the SLURM rerun failed:\n{_tail(runs.second)}"
    train_log = (runs.workdir / VICTIM_LOG).read_text()
    assert f"resuming {VICTIM_RUN} from iteration {runs.checkpoint_iteration}" in train_log, train_log
    assert (runs.workdir / VICTIM_RUN / "train_summary.json").is_file()


def test_tables_equal_the_local_run(slurm_runs: SlurmRuns, local_run: Workflow):
    assert slurm_runs.second_rc == 0, f"the SLURM rerun failed:\n{_tail(slurm_runs.second)}"
    assert local_run.wait() == 0, f"the local run failed:\n{local_run.tail}"
    slurm_tables = slurm_runs.workdir / REPORTS / "synthetic" / "tables"
    local_tables = local_run.workdir / REPORTS / "synthetic" / "tables"
    for table in DETERMINISTIC_TABLES:
        for ext in ("md", "csv", "tex"):
            name = f"{table}.{ext}"
            assert (slurm_tables / name).read_bytes() == (local_tables / name).read_bytes(), (
                f"{name} differs between the SLURM and the local run"
            )
    # efficiency: parameters and FLOPs must agree; latency, FPS and memory are measurements
    with (slurm_tables / "efficiency.csv").open() as a, (local_tables / "efficiency.csv").open() as b:
        slurm_rows, local_rows = list(csv.DictReader(a)), list(csv.DictReader(b))
    assert len(slurm_rows) == len(local_rows) == 3
    assert {"params_total", "gflops_per_episode"} <= set(slurm_rows[0])
    for s, loc in zip(slurm_rows, local_rows, strict=True):
        for column in set(s) - TIMING_COLUMNS:
            assert s[column] == loc[column], f"efficiency.csv, {s['label']}: {column} differs"
