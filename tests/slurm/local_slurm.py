"""A private single-node Slurm (munged + slurmctld + slurmd) for tests, started and stopped by pid.

Everything lives under one folder: its own munge key and socket, its own slurm.conf (reached
through ``SLURM_CONF``, so /etc/slurm is never read or written), free TCP ports, state, spool
and logs. The scheduler settings make a requeued job run again within ~10 s instead of ~3 min
(research/slurm_flow.md §3d): ``AuthInfo=cred_expire=5`` and ``bf_interval=1,sched_interval=2``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")


CLIENTS = ("sbatch", "scontrol", "squeue", "scancel", "sinfo", "srun", "munge")
# Daemons live in sbin, which a non-login PATH may lack.
_SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])


def _which(name: str) -> str | None:
    return shutil.which(name, path=_SEARCH)


def missing_binaries() -> list[str]:
    """Slurm/munge programs this machine lacks (the CI installs them: scripts/ci_system_deps.sh)."""
    return [b for b in (*DAEMONS, *CLIENTS) if _which(b) is None]


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (daemon exited, not yet reaped by its parent) counts as gone.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


class LocalSlurm:
    """``start()`` brings the node to idle; ``stop()`` cancels jobs, shuts down, removes state."""

    def __init__(self, root: Path, *, cpus: int | None = None) -> None:
        self.root = Path(root)
        self.node = socket.gethostname().split(".")[0]
        # More CPUs than the machine has are fine (SlurmdParameters=config_overrides); two
        # single-CPU ranks is what the tests need.
        self.cpus = cpus or max(2, os.cpu_count() or 2)
        self.pids: dict[str, int] = {}
        self.conf = self.root / "etc" / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    # ------------------------------------------------------------------ start
    def _write_conf(self) -> None:
        r = self.root
        for d in ("etc", "state", "spool", "log", "munge"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "etc" / "plugstack.conf").write_text("")
        ctld_port, d_port = _free_ports(2)
        self.conf.write_text(
            f"""\
ClusterName=optimlci
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Own munged socket; cred_expire=5 lets a requeued job start again after ~5 s (default 120).
AuthInfo=socket={self.munge_socket},cred_expire=5
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
JobRequeue=1
KillWait=10
# Finished jobs stay in `scontrol show job` this long (no slurmdbd, so no sacct).
MinJobAge=300
ReturnToService=2
SlurmdParameters=config_overrides
MailProg=/bin/true
PlugStackConfig={r}/etc/plugstack.conf
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        )

    def _start_munged(self) -> None:
        m = self.root / "munge"
        key = m / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        m.chmod(0o700)
        subprocess.run(
            [
                _which("munged"),
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--pid-file={m / 'munged.pid'}",
                f"--log-file={m / 'munged.log'}",
                f"--seed-file={m / 'munged.seed'}",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.pids["munged"] = self._read_pid(m / "munged.pid")

    def _read_pid(self, path: Path, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError):
                return int(path.read_text().strip())
            time.sleep(0.05)
        raise RuntimeError(f"{path} did not appear: see {self.root / 'log'}")

    def start(self, timeout: float = 60.0) -> None:
        self._write_conf()
        self._start_munged()
        for daemon in ("slurmctld", "slurmd"):
            # Both daemonize and return at once; their pid files name the daemons.
            subprocess.run(
                [_which(daemon)], env=self.env, check=True, capture_output=True, timeout=30
            )
            self.pids[daemon] = self._read_pid(self.root / f"{daemon}.pid")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
            if state == "idle":
                return
            time.sleep(0.2)
        raise RuntimeError(f"node not idle after {timeout} s (sinfo: {state!r}); {self.logs()}")

    # ------------------------------------------------------------------ use
    def run(self, *cmd: str, check: bool = True, timeout: float = 30.0, **kw):
        return subprocess.run(
            cmd, env=self.env, check=check, capture_output=True, text=True, timeout=timeout, **kw
        )

    def sbatch(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
        out = subprocess.run(
            ["sbatch", "--parsable", *args],
            env={**self.env, **(env or {})},
            cwd=cwd,
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        return int(out.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Restarts, ExitCode, StdOut, ...)."""
        out = self.run("scontrol", "show", "job", "-o", str(job_id), check=False).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait_for(self, job_id: int, states: set[str], timeout: float, poll: float = 0.5) -> dict:
        deadline = time.monotonic() + timeout
        info: dict = {}
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(poll)
        raise TimeoutError(f"job {job_id} not in {states} after {timeout} s: {info}")

    def logs(self) -> str:
        parts = []
        for p in sorted((self.root / "log").glob("*.log")):
            parts.append(f"--- {p.name} (tail)\n" + "\n".join(p.read_text().splitlines()[-15:]))
        return "\n".join(parts)

    # ------------------------------------------------------------------ stop
    def _jobs(self) -> list[str]:
        return self.run("squeue", "-h", "-o", "%i", check=False).stdout.split()

    def stop(self) -> None:
        """Jobs first (stopping slurmd under a running job orphans its slurmstepd), then the
        daemons by pid, then the state folder."""
        if "slurmctld" in self.pids and _pid_alive(self.pids["slurmctld"]):
            jobs = self._jobs()
            if jobs:
                self.run("scancel", "--signal=KILL", *jobs, check=False)
                self.run("scancel", *jobs, check=False)
                deadline = time.monotonic() + 30
                while self._jobs() and time.monotonic() < deadline:
                    time.sleep(0.3)
            self.run("scontrol", "shutdown", check=False)
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.pop(name, None)
            if pid is None:
                continue
            if name == "munged":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)
