"""Where a method's jobs run: in this process, or spread over the actors of a Ray cluster.

A scan is a list of blocks of consecutive inputs and an empirical RF a list of images; each job
is run by a *worker*, made once per process by a method's ``make(model, device, *args)``
(the model on its device, with its traced graph and engine), so the same code answers a job
here and on an actor.  On Ray, the jobs go through Ray Data's ``map_batches`` over an actor
pool (one actor per GPU where the cluster has GPUs, else one per CPU), one job per call, and
their answers come back in the jobs' order, so the caller merges and checkpoints them exactly
as it does its own.  An actor whose process dies is restarted and its job run again.

Ray is imported only here, and only when asked for (``executor="ray"``); it is the optional
extra ``pip install 'rflens[ray]'``.

>>> RayExecutor(actors=2)
RayExecutor(address=None, actors=2)
>>> as_executor("local") is None, as_executor("ray")
(True, RayExecutor(address=None, actors=None))
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import sys
import sysconfig
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Union

import torch
from torch import nn

from ..errors import RFLensError
from .running import check_runnable, pick_device, prepared

RESTARTS = 3  # a worker that dies (killed, out of memory) is restarted and its job retried this often
INSTALL = "pip install 'rflens[ray]'"


@dataclass(frozen=True)
class RayExecutor:
    """Run a method's jobs on a Ray cluster: ``address`` as ``ray.init`` takes it (None: the
    cluster this process is already connected to, else ``RAY_ADDRESS``, else a local cluster
    started for the call and stopped after it; ``"ray://head:10001"`` or ``"auto"`` for an
    existing one), ``actors`` how many model replicas (None: one per GPU of the cluster, or one
    per CPU where it has none).

    >>> RayExecutor("ray://head:10001", actors=8).address
    'ray://head:10001'
    """

    address: str | None = None
    actors: int | None = None

    def __post_init__(self):
        if self.actors is not None and self.actors < 1:
            raise RFLensError(f"actors {self.actors}: must be at least 1")


ExecutorLike = Union[None, str, RayExecutor]


def as_executor(executor: ExecutorLike) -> RayExecutor | None:
    """None (this process) for None or ``"local"``; a ``RayExecutor`` for ``"ray"`` or one."""
    if executor is None or executor == "local":
        return None
    if executor == "ray":
        return RayExecutor()
    if isinstance(executor, RayExecutor):
        return executor
    raise RFLensError(f"executor must be 'local', 'ray' or a RayExecutor, not {executor!r}")


def run_jobs(executor: RayExecutor | None, model: nn.Module, device, make: Callable, args: tuple,
             jobs: list) -> Iterator:
    """Everything ``make(model, device, *args)(job)`` yields, job after job, in the jobs' order:
    here (``executor`` None: the model on ``device`` for the whole run) or on Ray's actors."""
    if executor is not None:
        yield from _on_ray(executor, model, device, make, args, jobs)
        return
    dev = pick_device(device)
    with prepared(model, dev), torch.no_grad():
        work = make(model, dev, *args)
        for job in jobs:
            yield from work(job)


def import_ray():
    """``ray`` and ``ray.data``, or an RFLensError saying how to install them."""
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise RFLensError(f"running on Ray needs Ray ({e}): {INSTALL}") from None
    return ray


class _Actor:
    """A Ray Data actor: the worker ``make`` builds, kept for the actor's life."""

    def __init__(self, model, device, make, args):
        dev = pick_device(device)  # on the actor: its GPU where Ray gave it one
        self._held = contextlib.ExitStack()
        self._held.enter_context(prepared(model, dev))
        torch.set_grad_enabled(False)  # this process only runs forwards
        self.work = make(model, dev, *args)

    def __call__(self, batch: dict) -> dict:
        # jobs and answers travel pickled: their shapes vary, which Arrow columns do not like
        return {"answer": [pickle.dumps(self._answer(pickle.loads(job))) for job in batch["job"]]}

    def _answer(self, job) -> tuple[list | None, str]:
        """(what the job yields, "") or (None, the message of the RFLensError it raised): Ray
        would hand the error over as its own, with only a traceback's text."""
        try:
            return list(self.work(job)), ""
        except RFLensError as e:
            return None, str(e)


def _on_ray(executor: RayExecutor, model, device, make, args, jobs: list) -> Iterator:
    ray = import_ray()
    check_runnable(model)  # here, where its message reaches the user as it is
    if not jobs:
        return
    with _connected(ray, executor), _quiet(ray):
        _ship_by_value(ray)
        on_gpu = device is None or str(device).startswith("cuda")
        gpus = int(ray.cluster_resources().get("GPU", 0)) if on_gpu else 0
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        actors = min(executor.actors or gpus or cpus, len(jobs))
        rows = ray.data.from_items([{"job": pickle.dumps(job)} for job in jobs], override_num_blocks=len(jobs))
        pool = dict(fn_constructor_args=(model, device, make, args), batch_size=1, num_cpus=1,
                    num_gpus=1 if gpus else 0, compute=ray.data.ActorPoolStrategy(size=actors))
        with warnings.catch_warnings():
            # Ray 2.60 deprecates the restart arguments without a replacement; where a later Ray
            # drops them, its default (restart and retry without limit) applies
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                answers = rows.map_batches(_Actor, **pool, max_restarts=RESTARTS, max_task_retries=RESTARTS)
            except TypeError:
                answers = rows.map_batches(_Actor, **pool)
        for row in answers.iter_rows():
            done, refused = pickle.loads(row["answer"])
            if refused:
                raise RFLensError(refused)
            yield from done


@contextlib.contextmanager
def _connected(ray, executor: RayExecutor) -> Iterator[None]:
    """Connected to the executor's cluster; a cluster started here is stopped afterwards (also
    on Ctrl-C or an error), one already connected is left as it was."""
    if ray.is_initialized():
        yield
        return
    try:
        ray.init(address=executor.address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = executor.address or os.environ.get("RAY_ADDRESS")
        raise RFLensError((f"cannot connect to the Ray cluster at {where}" if where else
                           "cannot start a local Ray cluster") + f": {e}") from None
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _quiet(ray) -> Iterator[None]:
    """Ray Data without progress bars or execution logs (the library never prints), answers in
    the jobs' order; the caller's settings are put back afterwards."""
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars, context.execution_options.preserve_order
    log = logging.getLogger("ray.data")
    level = log.level
    context.enable_progress_bars, context.execution_options.preserve_order = False, True
    log.setLevel(logging.ERROR)  # not even the warning that progress bars are off
    try:
        yield
    finally:
        context.enable_progress_bars, context.execution_options.preserve_order = saved
        log.setLevel(level)


def _ship_by_value(ray) -> None:
    """Send the code of this process's own modules (a file given as MODEL, a script, a test)
    with the objects that use it (the model's classes, its hooks): Ray's workers can import
    only installed packages."""
    installed = tuple(os.path.realpath(p) for p in {sysconfig.get_paths()[k] for k in
                                                     ("stdlib", "platstdlib", "purelib", "platlib")})
    for name, module in list(sys.modules.items()):
        where = getattr(module, "__file__", None)
        if not where or "." in name or name in ("__main__", "rflens") or \
                os.path.realpath(where).startswith(installed) or "-packages" in where:
            continue
        ray.cloudpickle.register_pickle_by_value(module)
