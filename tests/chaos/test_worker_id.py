"""The same ``--worker-id`` twice: of two workers starting at once one wins and the other is
refused, naming the winner; the row of a killed worker is taken over at once on its host.

Figures (exit codes, how long a refusal and a take-over took) are printed: ``pytest -s``.
"""

import signal
import socket
import time

import pytest

from django_taskshed.models import WorkerRecord
from tests.workerprocs import WorkerProcess, worker_env

from .faults import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

WORKER_ID = "chaos-twin"


def start(worker_procs, n: int) -> WorkerProcess:
    """A worker with the shared id, its output in a directory of its own."""
    logdir = worker_procs.logdir / f"twin-{n}"
    logdir.mkdir()
    process = WorkerProcess(WORKER_ID, ["--poll-interval", "1"], worker_env(), logdir)
    worker_procs.processes.append(process)
    return process


def test_one_live_worker_per_worker_id(worker_procs):
    begun = time.monotonic()
    contenders = [start(worker_procs, 1), start(worker_procs, 2)]
    wait_for(lambda: all(p.banner() or p.returncode is not None for p in contenders), 30, "both")
    refused_after = time.monotonic() - begun
    running = [p for p in contenders if p.returncode is None]
    assert len(running) == 1, f"{len(running)} workers run with one id\n{worker_procs.describe()}"
    [winner] = running
    [loser] = [p for p in contenders if p is not winner]
    row = WorkerRecord.objects.get(pk=WORKER_ID)

    winner.send(signal.SIGKILL)  # its row stays, live for a lease (60 s)
    winner.wait(10)
    begun = time.monotonic()
    heir = start(worker_procs, 3)
    wait_for(lambda: heir.banner() or heir.returncode is not None, 30, "the third to start")
    taken_over_after = time.monotonic() - begun

    print(
        f"\n[chaos] same --worker-id twice at once: exit code {loser.returncode} for the "
        f"refused one ({refused_after:.2f} s after both started); the row of the SIGKILLed "
        f"winner taken over by a new worker {taken_over_after:.2f} s after its start"
    )
    assert loser.returncode == 1, loser.describe()
    assert (row.pid, row.hostname) == (winner.pid, socket.gethostname())
    expected = (
        f"worker id '{WORKER_ID}' is in use by a live worker: host {row.hostname}, "
        f"pid {winner.pid}, last heartbeat "
    )
    assert expected in loser.stderr(), loser.describe()
    assert loser.banner() is None
    assert heir.returncode is None and heir.banner(), heir.describe()
    assert "took over the row of a worker that is gone" in heir.stderr()
    assert WorkerRecord.objects.get(pk=WORKER_ID).pid == heir.pid
    heir.send(signal.SIGTERM)
    assert heir.wait(15) == 0
    assert not WorkerRecord.objects.filter(pk=WORKER_ID).exists()
