"""A real single-node SLURM cluster on localhost, for end-to-end tests.

``local_slurm_cluster()`` writes ``/etc/slurm/slurm.conf`` and ``gres.conf`` (one fake GPU),
starts munged (unless one is already running), slurmctld and slurmd in the foreground, waits
until the node is idle, and on exit stops exactly the processes it started, by PID, and
restores any configuration it replaced.  It needs root and Debian's packages
``slurmctld slurmd slurm-client munge``; if they are missing it raises ``SlurmUnavailable``.

The config must live at ``/etc/slurm/slurm.conf``: the Snakemake SLURM plugin strips every
``SLURM_*`` variable (``SLURM_CONF`` included) before the ``srun`` inside each job.
There is no accounting database, so run Snakemake with ``--slurm-status-command squeue``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

CONF_DIR = Path("/etc/slurm")
MUNGE_KEY = Path("/etc/munge/munge.key")
PORTS = (6817, 6818)
BINARIES = "slurmctld slurmd munged munge unmunge sbatch sinfo squeue scontrol scancel".split()
PARTITION = "debug"
NODE = "localhost"


class SlurmUnavailable(RuntimeError):
    """The local cluster cannot be started here; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass
class SlurmCluster:
    """What a test needs to know about the running cluster."""

    partition: str
    node: str
    workdir: Path  # state, spool, logs of this cluster

    def show_job(self, jobid: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (records stay for MinJobAge after the job ends)."""
        out = _run(["scontrol", "-o", "show", "job", jobid]).stdout
        return dict(f.split("=", 1) for f in out.split() if "=" in f)


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kw)


def check_preconditions() -> None:
    """Raise SlurmUnavailable unless we are root, the binaries exist and the ports are free."""
    if os.geteuid() != 0:
        raise SlurmUnavailable("needs root (writes /etc/slurm, starts daemons)")
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        raise SlurmUnavailable(
            f"missing binaries {missing}: apt-get install -y "
            "--no-install-recommends slurmctld slurmd slurm-client munge"
        )
    for port in PORTS:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", port))
            except OSError as e:
                raise SlurmUnavailable(f"port {port} in use ({e}): another SLURM running?") from e


def node_hardware(min_cpus: int, min_memory_mb: int) -> tuple[str, bool]:
    """The hardware part of the NodeName line, from ``slurmd -C``.

    If the machine has fewer CPUs or less memory than the profile asks for (a 2-core CI runner
    against ``cpus_per_gpu: 4``), advertise the minimum instead; the second value then says
    that ``SlurmdParameters=config_overrides`` is needed so the node is not drained.
    """
    first = _run(["slurmd", "-C"]).stdout.splitlines()[0]
    hw = dict(f.split("=", 1) for f in first.split() if not f.startswith("NodeName="))
    cpus, mem = int(hw["CPUs"]), int(hw["RealMemory"])
    if cpus >= min_cpus and mem >= min_memory_mb:
        return " ".join(f"{k}={v}" for k, v in hw.items()), False
    return f"CPUs={max(cpus, min_cpus)} RealMemory={max(mem, min_memory_mb)}", True


def slurm_conf(work: Path, hardware: str, overrides: bool) -> str:
    """slurm.conf for one node, no cgroups, no accounting database."""
    return f"""\
ClusterName=localcluster
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort={PORTS[0]}
SlurmdPort={PORTS[1]}
StateSaveLocation={work}/ctld
SlurmdSpoolDir={work}/spool
SlurmctldPidFile={work}/pids/slurmctld.pid
SlurmdPidFile={work}/pids/slurmd.pid
SlurmctldLogFile={work}/log/slurmctld.log
SlurmdLogFile={work}/log/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=3600
GresTypes=gpu
{"SlurmdParameters=config_overrides" if overrides else ""}
NodeName={NODE} NodeAddr=127.0.0.1 {hardware} Gres=gpu:1 State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""


@contextlib.contextmanager
def _replaced_config(files: dict[str, str]) -> Iterator[None]:
    """Write ``files`` into /etc/slurm; restore (or remove) them afterwards."""
    backups = {name: CONF_DIR / f"{name}.pytest-backup" for name in files}
    stale = [str(b) for b in backups.values() if b.exists()]
    if stale:
        raise SlurmUnavailable(f"stale backup {stale} from an aborted run: restore it by hand")
    CONF_DIR.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    try:
        for name, text in files.items():
            written.append(name)
            if (CONF_DIR / name).exists():
                (CONF_DIR / name).rename(backups[name])
            (CONF_DIR / name).write_text(text)
        yield
    finally:
        for name in written:
            (CONF_DIR / name).unlink(missing_ok=True)
            if backups[name].exists():
                backups[name].rename(CONF_DIR / name)


def _ensure_munge_key() -> None:
    """Create the munge key (1024 random bytes, owner munge, mode 400) if it is missing."""
    if not MUNGE_KEY.exists():
        munge = pwd.getpwnam("munge")
        MUNGE_KEY.write_bytes(os.urandom(1024))
        MUNGE_KEY.chmod(0o400)
        os.chown(MUNGE_KEY, munge.pw_uid, munge.pw_gid)


def _munge_works() -> bool:
    cred = _run(["munge", "-n"])
    return cred.returncode == 0 and _run(["unmunge"], input=cred.stdout).returncode == 0


def _wait_for(check, what: str, timeout: float, procs: list[subprocess.Popen], logs: Path):
    """Poll ``check()`` until true; fail early if one of ``procs`` died."""
    deadline = time.monotonic() + timeout
    while not check():
        dead = [p.args[0] for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            tails = "".join(
                f"\n--- {f.name}:\n" + "\n".join(f.read_text().splitlines()[-15:])
                for f in sorted(logs.glob("*.log"))
            )
            raise SlurmUnavailable(
                f"{what} failed ({'died: ' + str(dead) if dead else 'timeout'}){tails}"
            )
        time.sleep(0.5)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM one process we started (by PID), SIGKILL it if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cancel_leftover_jobs() -> None:
    """Cancel jobs still queued on our cluster so no slurmstepd outlives slurmd."""
    with contextlib.suppress(Exception):
        ids = _run(["squeue", "-h", "-o", "%i"]).stdout.split()
        if ids:
            _run(["scancel", *ids])
            deadline = time.monotonic() + 20
            while _run(["squeue", "-h", "-o", "%i"]).stdout.split():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)


def _node_idle() -> bool:
    return _run(["sinfo", "-h", "-N", "-o", "%t"]).stdout.strip() == "idle"


@contextlib.contextmanager
def local_slurm_cluster(
    min_cpus: int = 4, min_memory_mb: int = 16000, timeout: float = 60
) -> Iterator[SlurmCluster]:
    """Run a one-node cluster (partition ``debug``, one fake GPU) for the ``with`` block.

    ``min_cpus``/``min_memory_mb``: what the node advertises at least (see ``node_hardware``);
    ``timeout``: seconds to wait for the node to become idle.  Everything is undone on exit
    (in reverse order), also when starting fails or the block raises.
    """
    check_preconditions()
    hardware, overrides = node_hardware(min_cpus, min_memory_mb)
    procs: list[subprocess.Popen] = []  # exactly what we started

    def start(cmd: list[str], log: str, **kw) -> None:
        with open(logs / log, "ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw
            )
        procs.append(proc)

    with contextlib.ExitStack() as undo:
        work = Path(tempfile.mkdtemp(prefix="local-slurm-"))
        undo.callback(shutil.rmtree, work, ignore_errors=True)
        for sub in ("ctld", "spool", "log", "pids"):
            (work / sub).mkdir()
        logs = work / "log"
        gres = f"NodeName={NODE} Name=gpu File=/dev/null\n"
        conf = {"slurm.conf": slurm_conf(work, hardware, overrides), "gres.conf": gres}
        undo.enter_context(_replaced_config(conf))
        undo.callback(lambda: [_stop(p) for p in reversed(procs)])

        _ensure_munge_key()
        if not _munge_works():  # start our own munged, as user munge
            munge = pwd.getpwnam("munge")
            Path("/run/munge").mkdir(mode=0o755, exist_ok=True)
            os.chown("/run/munge", munge.pw_uid, munge.pw_gid)
            user = {"user": munge.pw_uid, "group": munge.pw_gid, "extra_groups": []}
            start(["munged", "--foreground"], "munged.out.log", **user)
            _wait_for(_munge_works, "munged", 15, procs, logs)
        start(["slurmctld", "-D", "-i", "-f", str(CONF_DIR / "slurm.conf")], "slurmctld.out.log")
        start(["slurmd", "-D", "-N", NODE, "-f", str(CONF_DIR / "slurm.conf")], "slurmd.out.log")
        undo.callback(_cancel_leftover_jobs)  # runs before the daemons are stopped
        _wait_for(_node_idle, "node becoming idle", timeout, procs, logs)
        yield SlurmCluster(partition=PARTITION, node=NODE, workdir=work)
