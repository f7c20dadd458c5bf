"""A real single-node Slurm cluster for the tests: Debian's munged, slurmctld and slurmd, started
as root from a ``slurm.conf`` written into a temporary folder (state, spool, logs, munge key and
socket all inside it), and stopped again by their process ids.

The node is this machine with its CPUs and most of its memory. The settings that differ from
Slurm's defaults make a time-limit requeue take seconds instead of minutes (see ``slurm_conf``).
Nothing here touches /etc/slurm, /etc/munge or the system's daemons; the commands (sbatch,
squeue, scontrol, ...) find this cluster through ``SLURM_CONF`` in :attr:`Cluster.env`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = ("sbatch", "squeue", "scontrol", "scancel", "srun", "sinfo")
DEBIAN_PACKAGES = "slurmctld slurmd slurm-client munge"


def missing() -> str | None:
    """Why a cluster cannot be started here, or None if it can."""
    if os.geteuid() != 0:
        return "a Slurm node needs root (slurmd runs jobs as their user)"
    absent = [p for p in (*DAEMONS, *COMMANDS) if shutil.which(p) is None]
    if absent:
        return f"{', '.join(absent)} not installed (Debian: apt-get install {DEBIAN_PACKAGES}; .ci/run installs them)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def slurm_conf(root: Path, host: str, cpus: int, memory: int, ports: tuple[int, int]) -> str:
    return f"""\
ClusterName=tests
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
SlurmUser=root
SlurmdUser=root
# munge: this folder's key and socket, not the system's. A requeued job may start again only
# after cred_expire seconds (default 120).
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge-run/munge.socket,cred_expire=5
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
# No cgroups: processes tracked by their parent ids, no CPU binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
# No accounting (no slurmdbd): sacct has nothing to say, as on clusters without it.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Scheduling every 2 s (default 60) and backfill every second (default 30): a requeued job starts
# again seconds after cred_expire. SIGTERM to SIGKILL in 5 s (default 30); finished jobs forgotten
# after 5 s (default 300); no grace time after the limit.
SchedulerParameters=sched_interval=2,bf_interval=1
KillWait=5
MinJobAge=5
OverTimeLimit=0
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=tests Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Cluster:
    root: Path
    env: dict = field(default_factory=dict)  # os.environ + SLURM_CONF
    procs: dict = field(default_factory=dict)  # daemon name -> Popen

    def run(self, *command: str, timeout: float = 60) -> str:
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
        return done.stdout

    def logs(self) -> str:
        """The daemons' logs, for a failing test's message."""
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted((self.root / "log").glob("*"))
            if p.is_file()
        )

    def start(self) -> None:
        for sub in ("munge", "munge-run", "state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # munged wants its socket's folders open to all (execute bit)
        (self.root / "munge").chmod(0o700)
        (self.root / "munge-run").chmod(0o755)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        host = socket.gethostname().split(".")[0]
        conf = self.root / "slurm.conf"
        cpus = len(os.sched_getaffinity(0))
        memory = memory_mb() * 9 // 10
        conf.write_text(slurm_conf(self.root, host, cpus, memory, (free_port(), free_port())))
        self.env = {**os.environ, "SLURM_CONF": str(conf)}

        log = self.root / "log"
        self._spawn(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={self.root}/munge-run/munge.socket",
                f"--key-file={key}",
                f"--pid-file={self.root}/munge/munged.pid",
                f"--seed-file={self.root}/munge/seed",
                f"--log-file={log}/munged.log",
            ],
        )
        self._wait(lambda: (self.root / "munge-run" / "munge.socket").exists(), "munged's socket")
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(conf)])
        self._wait(lambda: self._quiet("scontrol", "ping").count("UP") >= 1, "slurmctld to answer")
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(conf)])
        self._wait(lambda: "idle" in self._quiet("sinfo", "-h", "-o", "%t"), "the node to be idle")

    def _spawn(self, name: str, command: list[str]) -> None:
        out = open(self.root / "log" / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen(
            command, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        out.close()

    def _quiet(self, *command: str) -> str:
        try:
            return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=10).stdout
        except subprocess.TimeoutExpired:
            return ""

    def _wait(self, ready, what: str, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}\n{self.logs()}")
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs()}")

    def wait_idle(self, timeout: float = 60) -> None:
        """Until no job of this cluster is queued or running."""
        self._wait(lambda: self._quiet("squeue", "-h", "-o", "%i").strip() == "", "the queue to empty", timeout)

    def stop(self) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged by their process ids."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self._quiet("scancel", "--user=root")  # jobs of this cluster only (SLURM_CONF)
            try:
                self.wait_idle(timeout=30)
            except RuntimeError:
                pass
        for name in reversed(DAEMONS):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
