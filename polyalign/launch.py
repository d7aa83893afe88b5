"""``polyalign train --launcher submitit-local|slurm``: one training as one submitit job, one process per GPU
(``--tasks K`` local processes for CI), its process group taken from the job's environment (no torchrun).

The run directory is made at submission and the job always resumes it, so a job that is requeued (on a
preemption or time-limit signal, or after a node failed) goes on from the last checkpoint. On a stop signal
every process stops at the next optimizer step, rank 0 checkpoints, and submitit requeues the job. The job
records where it stands in ``RUN_DIR/job.json`` (read by ``polyalign train --status RUN_DIR``).
"""

from __future__ import annotations

import json
import shutil
import signal
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from polyalign.core.errors import PolyalignError, cut
from polyalign.core.plugin_manager import default_plugins
from polyalign.core.recipe import Recipe
from polyalign.core.requirements import check_requirements
from polyalign.files.atomic import atomic_write_text
from polyalign.files.json_file import JsonError, read_json
from polyalign.files.run_files import REPORT_DIR, REPORT_MD
from polyalign.training.preemption import Stopped
from polyalign.training.run_dir import new_run_dir

JOB_FILE = "job.json"
SUBMITIT_DIR = "submitit"  # submitit's pickles and the jobs' logs, inside the run directory
QUEUED, RUNNING, REQUEUED, FINISHED, FAILED = "queued", "running", "requeued", "finished", "failed"


@dataclass
class SlurmOptions:
    """What a Slurm job asks for (a training's job, or each run of a sweep)."""

    partition: str | None = None
    time_min: int = 60
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    nodes: int = 1
    extra: dict[str, str] = field(default_factory=dict)  # any other sbatch option: {"account": "lab", ...}


def submitit_executor(folder: Path, cluster: str, slurm: SlurmOptions, name: str, tasks_per_node: int = 1,
                      threads: int | None = None, array_parallelism: int | None = None) -> Any:
    """A submitit executor for ``cluster`` (``slurm``, else submitit's local executor) writing into ``folder``."""
    try:
        import submitit
    except ImportError:
        raise PolyalignError(f"--launcher {cluster} needs submitit: pip install 'polyalign[sweep]'") from None
    if cluster == "slurm" and shutil.which("srun") is None:
        raise PolyalignError("--launcher slurm: no srun on this machine; run the command on a login node of the "
                             "Slurm cluster (or use scripts/slurm-train.sbatch there)")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm" if cluster == "slurm" else "local")
    executor.update_parameters(timeout_min=slurm.time_min, gpus_per_node=slurm.gpus_per_node, nodes=slurm.nodes,
                               tasks_per_node=tasks_per_node, name=name,
                               **({"cpus_per_task": slurm.cpus_per_task or threads}
                                  if slurm.cpus_per_task or threads else {}))
    if cluster == "slurm":
        extra: dict[str, Any] = {}
        if array_parallelism:
            extra["slurm_array_parallelism"] = array_parallelism
        if slurm.partition:
            extra["slurm_partition"] = slurm.partition
        if slurm.mem_gb:
            extra["mem_gb"] = slurm.mem_gb
        if slurm.extra:
            extra["slurm_additional_parameters"] = dict(slurm.extra)
        executor.update_parameters(**extra)
    return executor


def parse_slurm_options(pairs: list[str]) -> dict[str, str]:
    """``["account=lab", "qos=high"]`` (from ``--slurm-option``) as sbatch options."""
    found = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip() or key.strip().startswith("-"):
            raise PolyalignError(f"--slurm-option {pair!r}: expected KEY=VALUE, an sbatch option without its "
                                 f"dashes, e.g. --slurm-option account=mylab --slurm-option qos=high")
        found[key.strip()] = value.strip()
    return found


def read_job(run_dir: Path) -> dict[str, Any]:
    """The job record of a run launched through submitit (empty when there is none)."""
    path = Path(run_dir) / JOB_FILE
    if not path.is_file():
        return {}
    try:
        record = read_json(path, "the job record", max_bytes=1 << 20)
    except JsonError as exc:
        raise PolyalignError(f"{exc}; it is only a record for --status: delete it to start a new one") from None
    return record if isinstance(record, dict) else {}


def write_job(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Update the job record of ``run_dir`` with ``fields`` (atomically)."""
    record = {**read_job(run_dir), **fields, "updated": datetime.now().isoformat(timespec="seconds")}
    atomic_write_text(Path(run_dir) / JOB_FILE, json.dumps(record, indent=1) + "\n")
    return record


class TrainJob:
    """The submitit job of one training: resumes its run directory (from step 0 when it has no checkpoint
    yet); on a stop signal checkpoints at the next optimizer step and has submitit requeue it."""

    def __init__(self, run_dir: str, force: bool = False):
        self.run_dir, self.force = run_dir, force  # force: train even where the fit check says it does not fit

    def __call__(self) -> str:
        import submitit

        from polyalign.run import train

        env = submitit.JobEnvironment()
        requeue = signal.getsignal(env._usr_sig())  # submitit's: calls checkpoint(), then requeues the job
        main = env.global_rank == 0
        try:
            if main:
                starts = int(read_job(Path(self.run_dir)).get("starts", 0)) + 1
                write_job(Path(self.run_dir), state=RUNNING, job_id=env.job_id, nodes=env.num_nodes,
                          tasks=env.num_tasks, hosts=list(env.hostnames), starts=starts,
                          started=datetime.now().isoformat(timespec="seconds"))
            # MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK for torch (a MASTER_PORT already set is kept)
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
            train(None, resume=self.run_dir, force=self.force)
        except Stopped as exc:
            if not main:
                return self.run_dir  # rank 0 requeues the job
            write_job(Path(self.run_dir), state=REQUEUED, signal=signal.Signals(exc.signum).name, step=exc.step)
            if not callable(requeue):
                raise
            try:
                requeue(exc.signum, None)  # exits this process; the job starts again and resumes
            except Exception as refused:  # out of requeues (timed out too often), or scontrol failed
                write_job(Path(self.run_dir), state=FAILED, error=cut(f"{exc} The job was not requeued: {refused}",
                                                                      2000))
                raise
            raise
        except Exception as exc:
            if main:
                write_job(Path(self.run_dir), state=FAILED, error=cut(str(exc), 2000))
            raise
        if main:
            write_job(Path(self.run_dir), state=FINISHED)
        return self.run_dir

    def checkpoint(self) -> Any:
        """What submitit requeues: the same job (the checkpoint is already written by the trainer)."""
        import submitit

        return submitit.helpers.DelayedSubmission(TrainJob(self.run_dir, self.force))


@dataclass
class Submitted:
    """A training handed to submitit."""

    run_dir: Path
    job: Any

    @property
    def logs(self) -> Path:
        return Path(self.job.paths.stdout)


def submit_training(recipe: Recipe, out: Path | None, launcher: str, slurm: SlurmOptions,
                    tasks: int | None = None, force: bool = False) -> Submitted:
    """Make the run directory of ``recipe`` and submit its training as one job: ``tasks`` processes per node
    (default: one per GPU, else one). Whether it fits the machine is checked by the job, where it runs."""
    per_node = tasks or max(1, slurm.gpus_per_node)
    if tasks and slurm.gpus_per_node and tasks != slurm.gpus_per_node:
        raise PolyalignError(f"--tasks {tasks} with --gpus-per-node {slurm.gpus_per_node}: a training runs one "
                             f"process per GPU; leave --tasks out")
    if launcher == "submitit-local" and slurm.nodes != 1:
        raise PolyalignError(f"--nodes {slurm.nodes}: submitit-local runs on this machine only; use --tasks K")
    world = per_node * slurm.nodes
    if recipe.train.batch_size % world:
        raise PolyalignError(f"train.batch_size: {recipe.train.batch_size} is the global batch and must divide "
                             f"evenly over the {world} processes ({slurm.nodes} node(s) x {per_node})")
    check_requirements(recipe, default_plugins(), f"recipe {recipe.name!r}")
    run_dir = new_run_dir(Path(out) if out else Path("runs"), recipe)
    try:
        executor = submitit_executor(run_dir / SUBMITIT_DIR, launcher, slurm, f"polyalign-{recipe.name}", per_node)
        write_job(run_dir, launcher=launcher, state=QUEUED, nodes=slurm.nodes, tasks=world, starts=0,
                  submitted=datetime.now().isoformat(timespec="seconds"))
        try:
            job = executor.submit(TrainJob(str(run_dir), force))
        except Exception as exc:  # noqa: BLE001 - sbatch refused it (a partition, an account...): said as is
            raise PolyalignError(f"--launcher {launcher}: the job was not submitted: {cut(str(exc).strip(), 2000)}") \
                from None
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # nothing was submitted: leave no run directory
        raise
    write_job(run_dir, job_id=str(job.job_id), logs=str(run_dir / SUBMITIT_DIR))
    return Submitted(run_dir, job)


def job_status(run_dir: Path) -> str:
    """Where a run stands, in words: queued / running on N nodes / requeued k times / finished / failed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PolyalignError(f"--status {run_dir}: no such run directory")
    job = read_job(run_dir)
    report = run_dir / REPORT_DIR / REPORT_MD
    if not job:
        done = f"finished (report: {report})" if report.is_file() else \
            f"not finished; continue it with: polyalign train --resume {run_dir}"
        return f"{run_dir}: trained without a launcher (no {JOB_FILE}); {done}"
    requeues = max(0, int(job.get("starts", 0)) - 1) + (job.get("state") == REQUEUED)
    again = f", requeued {requeues} time{'s' if requeues != 1 else ''}" if requeues else ""
    state = job.get("state")
    where = {QUEUED: "queued",
             RUNNING: f"running on {job.get('nodes')} node(s) ({job.get('tasks')} processes: "
                      f"{', '.join(job.get('hosts', [])) or '?'})",
             REQUEUED: f"requeued after {job.get('signal')} at step {job.get('step')}, waiting to start again",
             FINISHED: f"finished (report: {report})",
             FAILED: f"failed: {job.get('error', '?')}"}.get(state, f"unknown state {state!r}")
    return (f"{run_dir}: {where}{again}\n  job {job.get('job_id', '?')} ({job.get('launcher')}, "
            f"{job.get('nodes')} node(s), {job.get('tasks')} processes), submitted {job.get('submitted')}, "
            f"updated {job.get('updated')}\n  logs: {job.get('logs', run_dir / SUBMITIT_DIR)}")
