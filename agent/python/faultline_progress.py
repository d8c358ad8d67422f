"""faultline_progress: report training progress to the faultline agent on the same node.

A single file with no dependencies beyond the Python standard library (3.8+). Copy it next to the
training script, or put this directory on PYTHONPATH.

    from faultline_progress import Reporter
    progress = Reporter()                       # UDP to 127.0.0.1:9431, job and rank discovered
    for step in range(start, steps):
        ...
        progress.step(step, step_time_ms=dt_ms, compute_ms=fwd_bwd_ms, loss=loss.item())
    progress.exited(0)

Transports:
  - UDP (default): one datagram per record, nothing to wait for; works from the host's network
    namespace (Slurm, bare metal, hostNetwork pods). A refused record is only counted by the agent.
  - Unix socket: HTTP POST /progress on the agent's --progress-socket, which a Kubernetes pod
    reaches by mounting the host directory /run/faultline. Reporter(socket="/run/faultline/progress.sock").
    The agent's answer is read, so a refused record raises in strict mode and is logged once otherwise.

The job id and rank are found the way the agent finds them in /proc, so the records land on the
job the agent already tracks: the variables named in FAULTLINE_JOB_ID_ENV (the agent's
`[jobs] job_id_env`), SLURM_JOB_ID/SLURM_JOBID, TORCHELASTIC_RUN_ID (unless "none"), the Slurm job
of this process's cgroup, the Kubernetes pod uid of its cgroup, then torch-MASTER_ADDR-MASTER_PORT.
The rank: RANK, OMPI_COMM_WORLD_RANK, PMI_RANK, SLURM_PROCID.

Telemetry must never stop training: unless strict=True, every error is swallowed (and the first
one logged through the `logging` module).
"""

import json
import logging
import math
import os
import re
import socket

__all__ = ["Reporter", "discover_job", "discover_rank", "AgentRefused"]

DEFAULT_UDP = ("127.0.0.1", 9431)
DEFAULT_SOCKET = "/run/faultline/progress.sock"
STATUSES = ("running", "checkpointing", "evaluating", "exited")

_log = logging.getLogger("faultline_progress")
_NAME = re.compile(r"^[^\s/]{1,128}$")
_POD = re.compile(r"(?:^|-)pod([0-9a-fA-F_-]{36})(?:\.slice)?$")


class AgentRefused(Exception):
    """The agent answered a Unix-socket post with an error (strict mode only)."""


def _valid(v):
    return bool(v) and bool(_NAME.match(v))


def _cgroup_ids(path="/proc/self/cgroup"):
    """(slurm job id, pod uid) from a cgroup file, as the agent parses /proc/PID/cgroup."""
    job = pod = None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None, None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) < 3:
            continue
        for comp in parts[2].split("/"):
            if job is None and comp.startswith("job_") and comp[4:].isdigit():
                job = comp[4:]
            if pod is None:
                m = _POD.search(comp)
                if m:
                    uid = m.group(1).replace("_", "-")
                    if uid.count("-") == 4:
                        pod = uid.lower()
    return job, pod


def discover_job(env=None, cgroup_path="/proc/self/cgroup"):
    """The job id the agent discovers for this process, or None."""
    env = os.environ if env is None else env

    def get(k):
        v = env.get(k, "").strip()
        return v or None

    for k in (get("FAULTLINE_JOB_ID_ENV") or "").replace(",", " ").split():
        v = get(k)
        if _valid(v):
            return v
    for k in ("SLURM_JOB_ID", "SLURM_JOBID"):
        v = get(k)
        if _valid(v):
            return v
    v = get("TORCHELASTIC_RUN_ID")
    if v != "none" and _valid(v):
        return v
    job, pod = _cgroup_ids(cgroup_path)
    if job or pod:
        return job or pod
    addr, port = get("MASTER_ADDR"), get("MASTER_PORT")
    if addr and port and _valid("torch-%s-%s" % (addr, port)):
        return "torch-%s-%s" % (addr, port)
    return None


def discover_rank(env=None):
    """The global rank the agent discovers for this process, or None."""
    env = os.environ if env is None else env
    for k in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"):
        v = env.get(k, "").strip()
        if v.isdigit():
            return int(v)
    return None


def _number(x):
    """A finite float, or the agent's spelling of a non-finite one, or None."""
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


class Reporter:
    """Posts progress records to the agent. Cheap enough to call every step."""

    def __init__(self, job=None, rank=None, udp=DEFAULT_UDP, socket_path=None, timeout=2.0, strict=False):
        """job/rank: discovered when None. socket_path: post over the agent's Unix socket (HTTP)
        instead of UDP. strict: raise on errors instead of swallowing them (tests, first try)."""
        self.job = job if job is not None else discover_job()
        self.rank = rank if rank is not None else discover_rank()
        self.strict = strict
        self.timeout = timeout
        self.socket_path = socket_path
        self.udp = udp
        self._warned = False
        self._udp_sock = None
        self._last_step = 0
        if self.job is None or self.rank is None:
            self._fail(ValueError(
                "cannot tell the job id or rank: set SLURM_JOB_ID/TORCHELASTIC_RUN_ID and RANK, "
                "or pass job= and rank="))

    def _fail(self, err):
        if self.strict:
            raise err
        if not self._warned:
            self._warned = True
            _log.warning("faultline progress not reported: %s", err)

    def record(self, step, status="running", step_time_ms=None, compute_ms=None, loss=None, grad_norm=None,
               exit_code=None):
        """The JSON object for one post (a dict)."""
        if status not in STATUSES:
            raise ValueError("status must be one of %s" % ", ".join(STATUSES))
        body = {"job": self.job, "rank": self.rank, "step": int(step), "status": status}
        self._last_step = max(self._last_step, int(step))
        for k, v in (("step_time_ms", step_time_ms), ("compute_ms", compute_ms)):
            if v is not None:
                body[k] = float(v)
        for k, v in (("loss", loss), ("grad_norm", grad_norm)):
            v = _number(v)
            if v is not None:
                body[k] = v
        if status == "exited":
            body["exit_code"] = int(exit_code if exit_code is not None else 0)
        return body

    def post(self, body):
        """Sends one record; True when it went out (over the socket: when the agent took it)."""
        if self.job is None or self.rank is None:
            return False
        data = json.dumps(body, separators=(",", ":")).encode()
        try:
            if self.socket_path:
                return self._post_unix(data)
            if self._udp_sock is None:
                self._udp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self._udp_sock.setblocking(False)
            self._udp_sock.sendto(data, self.udp)
            return True
        except (OSError, AgentRefused) as e:
            self._fail(e)
            return False

    def _post_unix(self, data):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.socket_path)
            head = ("POST /progress HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                    "Content-Length: %d\r\nConnection: close\r\n\r\n" % len(data)).encode()
            s.sendall(head + data)
            answer = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
        finally:
            s.close()
        status_line, _, rest = answer.partition(b"\r\n")
        parts = status_line.split()
        code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if 200 <= code < 300:
            return True
        body = rest.partition(b"\r\n\r\n")[2].decode(errors="replace")
        try:
            reason = json.loads(body).get("error", body)
        except ValueError:
            reason = body.strip() or status_line.decode(errors="replace")
        raise AgentRefused("agent answered %d: %s" % (code, reason))

    # The calls a training loop makes.
    def step(self, step, step_time_ms=None, compute_ms=None, loss=None, grad_norm=None):
        """After each step (or every few)."""
        return self.post(self.record(step, "running", step_time_ms, compute_ms, loss, grad_norm))

    def checkpointing(self, step):
        """Before a checkpoint: the pause is not a hang."""
        return self.post(self.record(step, "checkpointing"))

    def evaluating(self, step):
        """Before an evaluation pass."""
        return self.post(self.record(step, "evaluating"))

    def exited(self, exit_code=0, step=None):
        """On the way out (exit_code negative when a signal ends the process); the step defaults to
        the last one reported, so the agent does not take the exit for a restart."""
        step = self._last_step if step is None else step
        return self.post(self.record(step, "exited", exit_code=exit_code))


if __name__ == "__main__":
    # `python3 faultline_progress.py STEP [STATUS]`: one record from a shell, with the discovered identity.
    import sys

    args = sys.argv[1:]
    if not args or not args[0].isdigit():
        sys.exit("usage: faultline_progress.py STEP [running|checkpointing|evaluating|exited] [--socket PATH]")
    sock = None
    if "--socket" in args:
        i = args.index("--socket")
        sock = args[i + 1]
        del args[i:i + 2]
    r = Reporter(socket_path=sock, strict=True)
    status = args[1] if len(args) > 1 else "running"
    r.post(r.record(int(args[0]), status))
    print(json.dumps(r.record(int(args[0]), status)))
