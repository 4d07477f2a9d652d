"""Where the jobs of a run execute: one interface, two engines.

An executor takes the run's jobs and yields ``(job, records)`` as each job ends, in whatever order
they end (``run``); ``runner.run`` writes those records. Only the driver ever writes the run folder,
so ``--resume``, the single-writer lock and the no-half-lines guarantee do not depend on the
executor.

- ``LocalExecutor`` (``--executor local``): this machine. A *slot* is one worker process per
  framework (``Workers``, the ``worker.py`` protocol), reused across jobs. ``--workers N`` gives N
  slots fed by N threads, N jobs at once, each with ``threads // N`` threads (default: one job per
  thread, ``default_workers``); one slot runs the jobs one at a time in the driver's thread.
  Whatever the number, a model is timed with the other jobs held (``quiet.py``).
- ``DaskExecutor`` (``--executor dask``): a Dask distributed cluster, at ``--scheduler ADDRESS`` or
  a ``LocalCluster`` started for the run (``--workers N`` processes, one thread each). A Dask task
  does not run the job itself: it hands it to the same ``Workers`` as the local executor, kept per
  Dask worker thread, so a Dask worker process never imports a framework and no process ever holds
  both torch and TensorFlow (whatever the cluster's resources say), and a framework is imported once
  per Dask worker rather than once per job. A job whose Dask worker is lost mid-job (its task never
  returns) is rescheduled by Dask on another worker, a bounded number of times: ``RETRIES`` on a
  LocalCluster, the scheduler's ``distributed.scheduler.allowed-failures`` on a cluster of one's
  own (Dask's default: 3); after that the job is recorded as failed (``dask: KilledWorker ...``).
  Each job's future completes once, and the driver writes a job once. A job that fails inside its
  framework process (exception, NaN, time limit, that process killed) is recorded as failed, as
  locally: it is not retried.

Dask is imported only when the dask executor is used.
"""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

from distillbench.benchmarks.running.job import Job, failed_records
from distillbench.benchmarks.running.worker import spawn
from distillbench.errors import UserError

RETRIES = 2  # reruns of a job whose Dask worker died (LocalCluster), or whose Dask task raised, before it is failed
CONNECT_TIMEOUT_S = 30
WAIT_FOR_WORKERS_S = 600


def worker_env(threads: int) -> dict[str, str]:
    """The workers' environment. OpenMP threads (torch's) sleep rather than spin between parallel
    regions unless the user says otherwise: on a machine with other load, spinning threads made
    torch training up to 20x slower here (4.4 s vs 0.12 s per epoch, 2 threads)."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
    }


class Workers:
    """One worker process per framework; a job that times out or kills its worker is failed, and
    the next job of that framework gets a new worker."""

    def __init__(self, log_path: Path, threads: int, fresh: bool):
        self.log = open(log_path, "a")  # noqa: SIM115 - the workers' stderr for their whole life; close() closes it
        self.fresh = fresh
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.env = worker_env(threads)

    def run(self, job: Job, timeout: float) -> list[dict]:
        started = time.time()
        proc = self.procs.get(job.framework)
        if proc is None or proc.poll() is not None:
            proc = self.procs[job.framework] = spawn(self.log, self.env)
        assert proc.stdin is not None and proc.stdout is not None  # spawn() opens both pipes
        try:
            proc.stdin.write(json.dumps(asdict(job)) + "\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], timeout)
            line = proc.stdout.readline() if ready else None
        except BrokenPipeError:
            line = ""
        if line is None:
            self.stop(job.framework, kill=True)  # it may be stuck: waiting for it would only cost time
            return failed_records(job, f"time limit of {timeout:g} s exceeded", started)
        if not line:
            code = self.stop(job.framework)
            why = " (killed: out of memory?)" if code == -signal.SIGKILL else ""
            return failed_records(job, f"worker process died with exit code {code}{why}", started)
        if self.fresh:
            self.stop(job.framework)
        return json.loads(line)

    def stop(self, framework: str, kill: bool = False) -> int | None:
        proc = self.procs.pop(framework, None)
        if proc is None:
            return None
        if kill:
            proc.kill()
            return proc.wait()
        if proc.poll() is None:
            assert proc.stdin is not None  # spawn() opens it
            proc.stdin.close()
            try:
                return proc.wait(timeout=10)
            except Exception:  # noqa: BLE001 - a stuck worker is killed
                proc.kill()
        return proc.wait()

    def close(self, now: bool = False) -> None:
        """Stop the workers: at once (``now``: a run interrupted or stopped), else once idle."""
        for framework in list(self.procs):
            self.stop(framework, kill=now)
        self.log.close()


class Executor:
    """Runs jobs; ``run`` yields ``(job, records)`` once per job as each ends, in any order."""

    name = "?"
    concurrency = 1  # jobs that may run at once (the manifest's "sharing"; timings are taken alone all the same)
    description = ""  # the manifest's "worker"
    threads = 1  # threads of each job

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, list[dict]]]:
        raise NotImplementedError

    def info(self) -> dict:
        return {"name": self.name, "concurrency": self.concurrency}

    def close(self, now: bool = False) -> None:
        """Release what runs the jobs; ``now``: the run was interrupted, do not wait for running jobs."""


def make_executor(options, log: Path) -> Executor:
    """The executor a run's options ask for (``RunOptions``: executor, scheduler, workers, threads)."""
    if options.executor == "dask":
        return DaskExecutor(
            options.scheduler, options.workers, log, options.threads, options.fresh_process, options.job_timeout
        )
    return LocalExecutor(
        options.workers or default_workers(options.threads),
        log,
        options.threads,
        options.fresh_process,
        options.job_timeout,
    )


def default_workers(threads: int) -> int:
    """Jobs at once on this machine when ``--workers`` is not given: one per thread of the run, so
    that each job trains on one thread (measured on 2 cores: a training step of the default teacher
    and student was slower on two threads than on one, in both frameworks; README, "Training
    speed"), and at most one per 2 GiB of memory (a slot holds a worker process per framework)."""
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory_gib = 2.0
    return max(1, min(threads, int(memory_gib // 2)))


def _shared(threads: int, slots: int) -> int:
    """Threads of each job when `slots` jobs share this machine's `threads`."""
    return max(1, threads // slots)


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, workers: int, log: Path, threads: int, fresh: bool, timeout: float):
        self.concurrency, self.timeout, self.threads = workers, timeout, _shared(threads, workers)
        self.slots = [Workers(log, self.threads, fresh) for _ in range(workers)]
        self.free: queue.SimpleQueue[Workers] = queue.SimpleQueue()
        for slot in self.slots:
            self.free.put(slot)
        self.pool: ThreadPoolExecutor | None = None
        self.description = ("fresh process per job" if fresh else "one process per framework, reused") + (
            f"; {workers} jobs at once, one such set of processes each" if workers > 1 else ""
        )

    def _run(self, job: Job) -> tuple[Job, list[dict]]:
        slot = self.free.get()
        try:
            return job, slot.run(job, self.timeout)
        finally:
            self.free.put(slot)

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, list[dict]]]:
        if self.concurrency == 1:
            return map(self._run, jobs)  # one at a time, in order, nothing else of ours running
        if self.pool is None:  # one pool for the run's phases (the reference jobs, then the frameworks')
            self.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="distillbench-slot")
        futures = [self.pool.submit(self._run, job) for job in jobs]
        return (future.result() for future in as_completed(futures))

    def close(self, now: bool = False) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        for slot in self.slots:
            slot.close(now)


class DaskExecutor(Executor):
    name = "dask"

    def __init__(
        self, scheduler: str | None, workers: int | None, log: Path, threads: int, fresh: bool, timeout: float
    ):
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise UserError(f"--executor dask needs dask[distributed] installed ({exc})") from None
        self.task_args, self.cluster = (str(log), fresh, timeout), None
        self.futures: dict = {}  # Dask future -> its Job
        self._environ = dict(os.environ)  # a LocalCluster's nannies set variables in this process: restored on close
        if scheduler is None:
            workers = workers or os.cpu_count() or 1
            # The Dask workers inherit this process's environment as it is, like the local workers (by
            # default Dask sets OMP/MKL/OPENBLAS_NUM_THREADS=1 for them); each job sets its own threads.
            # No statistical profiler (it samples every 10 ms, for a dashboard this cluster does not have).
            with dask.config.set(
                {"distributed.nanny.pre-spawn-environ": {}, "distributed.worker.profile.enabled": False}
            ):
                self.cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    scheduler_kwargs={"allowed_failures": RETRIES},
                )
            self.client = Client(self.cluster)
            self.threads = _shared(threads, workers)
        else:
            try:
                self.client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                raise UserError(f"--scheduler {scheduler}: cannot connect ({str(exc).splitlines()[0]})") from None
            try:
                if workers:
                    self.client.wait_for_workers(workers, timeout=WAIT_FOR_WORKERS_S)
            except TimeoutError:
                self.client.close()
                raise UserError(
                    f"--workers {workers}: fewer workers joined {scheduler} within {WAIT_FOR_WORKERS_S} s"
                ) from None
            self.threads = threads  # the driver's cores say nothing of the workers': --threads (default 1)
        try:  # each worker imports the task's code now: a worker that cannot says so before any job is sent
            self.client.run(_ready)
        except Exception as exc:  # noqa: BLE001 - whatever the workers raised
            self.close()
            raise UserError(
                f"the Dask workers cannot import distillbench ({type(exc).__name__}: {exc}): install it "
                "there, with the same pins"
            ) from None
        self.scheduler = self.client.scheduler_info()["address"]
        self.workers = self.client.scheduler_info()["workers"]
        self.concurrency = sum(w["nthreads"] for w in self.workers.values())
        self.description = (
            f"dask ({'a LocalCluster for the run' if self.cluster else self.scheduler}): each Dask worker "
            f"hands its jobs to one process per framework, " + ("fresh per job" if fresh else "reused")
        )

    def info(self) -> dict:
        return {
            **super().info(),
            "scheduler": None if self.cluster else self.scheduler,
            "local_cluster": self.cluster is not None,
            "workers": len(self.workers),
            "hosts": sorted({w["host"] for w in self.workers.values()}),
            "retries": RETRIES,
        }

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, list[dict]]]:
        from distributed import as_completed as completed

        token = uuid.uuid4().hex[:8]
        for job in jobs:
            key = f"distillbench-{token}-{job.dataset_id}-{job.seed}-{job.framework}"
            future = self.client.submit(_dask_task, job, *self.task_args, key=key, pure=False, retries=RETRIES)
            self.futures[future] = job
        for future in completed(list(self.futures)):
            job = self.futures.pop(future)
            try:
                records = future.result()
            except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: its worker died RETRIES + 1 times
                reason = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
                records = failed_records(job, f"dask: {reason}", time.time())
            future.release()
            yield job, records

    def close(self, now: bool = False) -> None:
        try:
            if self.futures:
                self.client.cancel(list(self.futures))
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()
        finally:
            for key in set(os.environ) - set(self._environ):
                del os.environ[key]
            os.environ.update(self._environ)


def _ready() -> bool:
    """Sent to every worker first: unpickling it there imports this module (and distillbench)."""
    return True


_slot = threading.local()


def _dask_task(job: Job, log: str, fresh: bool, timeout: float) -> list[dict]:
    """A job on a Dask worker: handed to this worker thread's ``Workers`` (one process per framework).
    The log goes to the run's ``worker.log`` when this machine can write there (one machine, or a
    shared filesystem), else to the Dask worker's local directory."""
    if not os.access(Path(log).parent, os.W_OK):
        from distributed import get_worker

        log = str(Path(get_worker().local_directory) / "distillbench-worker.log")
    assert job.threads is not None  # the runner gives every job its threads
    settings = (job.threads, log, fresh)
    if getattr(_slot, "settings", None) != settings:
        if getattr(_slot, "workers", None) is not None:
            _slot.workers.close()
        _slot.workers, _slot.settings = Workers(Path(log), job.threads, fresh), settings
    return _slot.workers.run(job, timeout)
