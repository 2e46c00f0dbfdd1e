"""A learner's kernel in a bubblewrap sandbox, and the learner's functions called from outside it.

The grader (``grading.py``) starts one IPython kernel per notebook inside ``bwrap`` (Linux user namespaces):

* the whole file system read-only, with the instructor's home, /run (service sockets), the submissions folder and
  the grader's own files hidden (empty folders), and only what a kernel needs shown again read-only: Python, the
  course package, its ``.venv`` and the model cache; the hidden checks, solutions/ and .git stay hidden;
* one writable place: a fresh ``/tmp`` of at most ``disk_mb`` in memory (the kernel's HOME, TMPDIR and working folder
  are in it), gone when the kernel ends;
* no network (``--unshare-all``: its own network, PID, IPC and user namespaces), no capabilities, a new session
  (no terminal to type into), an address-space and file-size limit set before the kernel starts;
* ``--die-with-parent`` and a PID namespace: killing the sandbox kills every process started in it, daemons too.

The grader talks to the kernel over Jupyter's protocol on Unix sockets in the sandbox's /tmp, which it reaches through
``/proc/PID/root``. Learner code never runs in the grader's process: a check cell runs in the grader with a
``Remote`` in place of each learner function; calling it sends the arguments to the kernel as JSON (numbers, strings,
lists, dicts, tensors as dtype/shape/bytes; never pickle), ``serve`` calls the learner's function there and sends
the result back the same way. Models go by name (the real pair: the kernel loads its own copy) or by config and
weights (small random models); an object that cannot be sent back (a learner's policy or drafter) stays in the kernel
and comes back as a reference whose methods are called the same way.
"""
from __future__ import annotations

import base64
import builtins
import contextlib
import dataclasses
import importlib
import json
import os
import queue
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

MAX_MESSAGE = 64 * 2**20   # bytes of one JSON answer from the kernel
INNER_TMP = "/tmp"         # the sandbox's only writable folder
CONNECTION = f"{INNER_TMP}/.specdec-connection.json"


class KernelStopped(BaseException):
    """The kernel ran past its time, died, or could not start: the notebook stops here. A BaseException, so that a
    check's ``except Exception`` does not take it for a failure of the learner's function."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind  # "timeout", "dead" or "error"


# --------------------------------------------------------------------------- the wire format (both sides)
def encode(value, other=None):
    """A JSON-able form of ``value``; ``other(value)`` encodes what the plain rules do not (or raises TypeError)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [encode(v, other) for v in value]
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v, other) for v in value]}
    if isinstance(value, dict):
        return {"__dict__": [[encode(k, other), encode(v, other)] for k, v in value.items()]}
    if isinstance(value, Path):
        return {"__path__": str(value)}
    if isinstance(value, SimpleNamespace):
        return {"__namespace__": {k: encode(v, other) for k, v in vars(value).items()}}
    module = type(value).__module__
    if module == "torch":
        import torch

        if isinstance(value, torch.Tensor):
            data = value.detach().cpu().contiguous().reshape(-1)
            raw = data.view(torch.uint8).numpy().tobytes() if data.numel() else b""
            return {"__tensor__": str(value.dtype).removeprefix("torch."), "shape": list(value.shape),
                    "data": base64.b64encode(raw).decode()}
        if isinstance(value, torch.device):
            return {"__device__": str(value)}
        if isinstance(value, torch.dtype):
            return {"__dtype__": str(value).removeprefix("torch.")}
    if module == "numpy":
        import torch

        return encode(torch.as_tensor(value).clone() if value.ndim else value.item(), other)
    if dataclasses.is_dataclass(value) and not isinstance(value, type) and module.startswith("specdec_course."):
        return {"__dataclass__": f"{module}:{type(value).__qualname__}",
                "fields": {f.name: encode(getattr(value, f.name), other) for f in dataclasses.fields(value) if f.init}}
    if other is not None:
        return other(value)
    raise TypeError(f"cannot send a {type(value).__name__} through the sandbox")


def decode(data, other=None):
    """The value ``encode`` made; ``other(marker dict)`` decodes what the plain rules do not."""
    if not isinstance(data, (list, dict)):
        return data
    if isinstance(data, list):
        return [decode(v, other) for v in data]
    if "__tuple__" in data:
        return tuple(decode(v, other) for v in data["__tuple__"])
    if "__dict__" in data:
        return {decode(k, other): decode(v, other) for k, v in data["__dict__"]}
    if "__path__" in data:
        return Path(data["__path__"])
    if "__namespace__" in data:
        return SimpleNamespace(**{k: decode(v, other) for k, v in data["__namespace__"].items()})
    if "__tensor__" in data:
        import torch

        dtype = getattr(torch, data["__tensor__"])
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"not a tensor type: {data['__tensor__']!r}")
        raw = base64.b64decode(data["data"])
        if not raw:
            return torch.empty(data["shape"], dtype=dtype)
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(data["shape"])
    if "__device__" in data:
        import torch

        return torch.device(data["__device__"])
    if "__dtype__" in data:
        import torch

        return getattr(torch, data["__dtype__"])
    if "__dataclass__" in data:
        module, _, name = data["__dataclass__"].partition(":")
        cls = getattr(importlib.import_module(module), name, None) if module.startswith("specdec_course.") else None
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"not a course dataclass: {data['__dataclass__']!r}")
        return cls(**{k: decode(v, other) for k, v in data["fields"].items()})
    if other is not None:
        return other(data)
    raise TypeError(f"unknown value in the sandbox's answer: {sorted(data)}")


def _cache_layers(cache) -> list:
    return [(layer.keys, layer.values) for layer in cache.layers if getattr(layer, "is_initialized", True)]


def _is_cache(value) -> bool:
    return type(value).__name__ == "DynamicCache" and hasattr(value, "layers")


# --------------------------------------------------------------------------- inside the kernel
_KERNEL = {"objects": {}, "models": {}, "pair": None}


def _named_model(name: str):
    """The real target or draft, loaded once per kernel exactly as the grader loads its own copy."""
    if _KERNEL["pair"] is None:
        from ..models import load_pair

        _KERNEL["pair"] = load_pair(kernels="stock", verbose=False)
    return {"target": _KERNEL["pair"][0], "draft": _KERNEL["pair"][1]}[name]


def _kernel_decode(marker):
    if "__model__" in marker:
        key = marker["__model__"]
        if key in ("target", "draft"):
            return _named_model(key)
        if "state" in marker:
            import transformers

            config_class = getattr(transformers, marker["config_class"])
            model = getattr(transformers, marker["class"])(config_class.from_dict(marker["config"]))
            model.load_state_dict({k: decode(v) for k, v in marker["state"].items()})
            _KERNEL["models"][key] = model.eval()
        return _KERNEL["models"][key]
    if "__cache__" in marker:
        from transformers import DynamicCache

        cache = DynamicCache()
        for index, (keys, values) in enumerate(marker["__cache__"]):
            cache.update(decode(keys), decode(values), index)
        return cache
    if "__generator__" in marker:
        import torch

        generator = torch.Generator()
        generator.set_state(decode(marker["__generator__"]))
        return generator
    if "__ref__" in marker:
        return _KERNEL["objects"][marker["__ref__"]]
    raise TypeError(f"unknown value sent to the sandbox: {sorted(marker)}")


def _kernel_encode(value):
    """What cannot travel stays in the kernel: a reference to it, with the names of its classes."""
    ref = len(_KERNEL["objects"])
    _KERNEL["objects"][ref] = value
    bases = [f"{c.__module__}:{c.__qualname__}" for c in type(value).__mro__]
    return {"__ref__": ref, "type": type(value).__name__, "bases": bases, "callable": callable(value)}


def _mutable_state(value):
    if _is_cache(value):
        return {"__cache__": [[encode(k), encode(v)] for k, v in _cache_layers(value)]}
    if type(value).__name__ == "Generator" and hasattr(value, "get_state"):
        return {"__generator__": encode(value.get_state())}
    return None


def serve(namespace: dict, text: str) -> str:
    """Run one request from the grader in the learner's kernel; the answer as JSON text (ASCII)."""
    hooks = []
    try:
        request = json.loads(text)
        if request["op"] == "set":
            namespace[request["name"]] = decode(request["value"], _kernel_decode)
            return json.dumps({"ok": None})
        where = request["where"]
        if "ref" in where:
            subject = _KERNEL["objects"][where["ref"]]
        elif where["name"] in namespace:
            subject = namespace[where["name"]]
        else:
            raise NameError(f"name {where['name']!r} is not defined (did its cell run?)")
        if request["op"] == "getattr":
            value = getattr(subject, request["attr"])
            if callable(value) and not isinstance(value, type):
                return json.dumps({"ok": {"__method__": request["attr"]}})
            return json.dumps({"ok": encode(value, _kernel_encode)})
        if request.get("attr"):
            subject = getattr(subject, request["attr"])
        args = decode(request["args"], _kernel_decode)
        kwargs = {k: decode(v, _kernel_decode) for k, v in request["kwargs"].items()}
        passes = {}
        for index, marker in enumerate(request["args"]):  # forward passes of each model handed in, for the checks
            if isinstance(marker, dict) and "__model__" in marker:
                lengths = passes.setdefault(str(index), [])

                def hook(module, hook_args, hook_kwargs, lengths=lengths):
                    ids = hook_args[0] if hook_args else hook_kwargs.get("input_ids")
                    if ids is not None:
                        lengths.append(int(ids.shape[-1]))

                hooks.append(args[index].register_forward_pre_hook(hook, with_kwargs=True))
        spent = 0.0
        if "clock" in request:  # the grader's check runs on a simulated clock: so does this call, with the same costs
            from ..perf import clock

            with contextlib.ExitStack() as stack:
                stack.enter_context(clock.simulated())
                for index, ms_per_pass, ms_per_extra_token in request["clock"]:
                    stack.enter_context(clock.added_cost(args[index], ms_per_pass, ms_per_extra_token))
                result = subject(*args, **kwargs)
                spent = clock.now()
        else:
            result = subject(*args, **kwargs)
        after = {str(i): state for i, value in enumerate(args) if (state := _mutable_state(value)) is not None}
        return json.dumps({"ok": encode(result, _kernel_encode), "passes": passes, "after": after, "spent": spent})
    except BaseException as err:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too: all go back as the answer
        return json.dumps({"error": [type(err).__name__, str(err)[:2000]]})
    finally:
        for handle in hooks:
            handle.remove()


# --------------------------------------------------------------------------- the grader's side: proxies
class Remote:
    """A learner's object that lives in the kernel: calling it (or its methods) runs there."""

    def __init__(self, kernel, where: dict, name: str):
        object.__setattr__(self, "_kernel", kernel)
        object.__setattr__(self, "_where", where)
        object.__setattr__(self, "__name__", name)

    def __call__(self, *args, **kwargs):
        return self._kernel.call(self._where, None, args, kwargs)

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return self._kernel.getattr(self._where, attr)

    def __repr__(self):
        return f"<{self.__name__} in the sandbox>"


class RemoteMethod:
    def __init__(self, kernel, where: dict, attr: str):
        self._kernel, self._where, self.__name__ = kernel, where, attr

    def __call__(self, *args, **kwargs):
        return self._kernel.call(self._where, self.__name__, args, kwargs)


def _remote_drafter_class():
    """A Remote that is also a ``Drafter`` (``speculative_generate`` checks that), every public name forwarded."""
    from ..drafters.base import Drafter

    def forward(self, attr):
        if attr.startswith("_"):
            return object.__getattribute__(self, attr)
        return object.__getattribute__(self, "_kernel").getattr(object.__getattribute__(self, "_where"), attr)

    return type("RemoteDrafter", (Remote, Drafter), {"__getattribute__": forward})


# --------------------------------------------------------------------------- the sandbox itself
def unavailable_reason() -> str | None:
    """None where bwrap can make a sandbox on this machine; else why not (in words)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed" + ("" if sys.platform.startswith("linux") else f" (and not available on {sys.platform})")
    try:
        probe = subprocess.run([bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
                                "--unshare-all", "--die-with-parent", "--cap-drop", "ALL", "true"],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"bwrap does not run here ({err})"
    if probe.returncode:
        lines = probe.stderr.strip().splitlines()
        return f"bwrap cannot make a sandbox here ({lines[-1] if lines else f'exit {probe.returncode}'}; user namespaces off?)"
    return None


_LAUNCH = """import resource, sys
for limit, value in ((resource.RLIMIT_AS, int(sys.argv[2])), (resource.RLIMIT_FSIZE, int(sys.argv[3])),
                     (resource.RLIMIT_NPROC, int(sys.argv[4]))):
    if value > 0:
        resource.setrlimit(limit, (value, value))
from ipykernel.kernelapp import launch_new_instance
sys.argv = ["ipykernel", "-f", sys.argv[1], "--HistoryManager.enabled=False"]
launch_new_instance()
"""


def default_max_processes() -> int:
    """Processes and threads one kernel may have at once: room for torch's threads on a machine with many cores."""
    return max(256, 4 * (os.cpu_count() or 1))


class ProcessLimit:
    """At most ``limit`` processes (threads count too) in one sandbox.

    RLIMIT_NPROC, set in the kernel's launcher, counts per user *in the sandbox's user namespace*, so it counts only the
    sandbox's own processes; the kernel ignores it for root, so a grader running as root also puts the sandbox in a
    pids cgroup of its own (cgroup v1 ``pids`` or v2 with the pids controller) where it can make one. ``how`` says
    which limit holds ("" when none can: root without a writable pids cgroup)."""

    ROOTS = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup")

    def __init__(self, limit: int):
        self.limit, self.group, self.how = limit, None, "RLIMIT_NPROC"
        if os.geteuid() != 0:
            return
        self.how = ""
        for base in self.ROOTS:
            if not Path(base, "cgroup.procs").exists():  # v1's pids hierarchy, or v2's root (tried, may refuse)
                continue
            group = Path(base, f"specdec-grade-{os.getpid()}-{secrets.token_hex(4)}")
            try:
                group.mkdir()
                (group / "pids.max").write_text(str(limit))
            except OSError:
                with contextlib.suppress(OSError):
                    group.rmdir()
                continue
            self.group, self.how = group, "a pids cgroup"
            return

    def enter(self) -> None:
        """In the child, before bwrap starts: join the cgroup."""
        if self.group is not None:
            (self.group / "cgroup.procs").write_text(str(os.getpid()))

    def hit(self) -> bool:
        """Whether a process could not start because of the cgroup's limit."""
        events = _read(self.group / "pids.events") if self.group is not None else ""
        return any(line.split()[:1] == ["max"] and line.split()[1:2] != ["0"] for line in events.splitlines())

    def close(self) -> None:
        if self.group is None:
            return
        for _ in range(100):  # every process in it has been killed; wait until the kernel has reaped them
            for pid in _read(self.group / "cgroup.procs").split():
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)
            try:
                self.group.rmdir()
                return
            except OSError:
                time.sleep(0.05)


def _read(path: Path) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _existing(paths) -> list[str]:
    return list(dict.fromkeys(str(Path(p)) for p in paths if p and Path(p).exists()))


def kernel_env(home: Path, tmp: Path, cache: Path) -> dict:
    """The kernel's environment: a few of the grader's variables (none that could carry a secret), folders of its own."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    env = {k: v for k, v in os.environ.items()
           if k in keep or k.startswith(("OPENBLAS_", "SPECDEC_", "LC_")) and k != "SPECDEC_CACHE_DIR"}
    env.update(HOME=str(home), TMPDIR=str(tmp), IPYTHONDIR=f"{home}/.ipython", JUPYTER_RUNTIME_DIR=f"{home}/runtime",
               JUPYTER_DATA_DIR=f"{home}/data", JUPYTER_CONFIG_DIR=f"{home}/config", MPLCONFIGDIR=f"{home}/mpl",
               XDG_CACHE_HOME=f"{home}/.cache", TORCHINDUCTOR_CACHE_DIR=f"{home}/.cache/torchinductor",
               TRITON_CACHE_DIR=f"{home}/.cache/triton", SPECDEC_CACHE_DIR=str(cache), HF_HUB_OFFLINE="1",
               SPECDEC_QUICK="1", PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="module://matplotlib_inline.backend_inline")
    return env


def _inside(path, folder) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


def _pycs(source: Path) -> list[Path]:
    cached = source.parent / "__pycache__"
    return list(cached.glob(f"{source.stem}.*.pyc")) if cached.is_dir() else []


def bwrap_command(shown: list[str], hidden: list[str], disk_mb: int, withheld: dict | None = None) -> list[str]:
    """bwrap's arguments: the system read-only, the private places and ``hidden`` hidden, Python and the course shown
    again read-only, a fresh /tmp, and ``shown`` (the grader's own files for the checks) read-only at its own path.

    Of the course's folder only the package (and a virtual environment inside it) is shown: solutions, notebooks,
    tests, build copies and .git are not. The grader-only modules (``integrity.GRADER_ONLY``: the reference answers,
    the hidden checks) are empty files, and each module in ``withheld`` ({original file: stripped copy}) is replaced by
    its copy, in which the graded tasks' reference implementations are stubs."""
    from . import integrity

    from ..storage import cache_dir

    root = Path(__file__).resolve().parents[2]
    package = Path(__file__).resolve().parents[1]
    args = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    emptied = [p for p in _existing([Path.home(), "/root", "/home", "/run", "/var/run", "/var/tmp", "/mnt", "/media"])
               if not Path(p).is_symlink()]
    for path in emptied:
        args += ["--tmpfs", path]
    # the fresh /tmp comes before Python, the course and the cache are shown again: any of them may live under /tmp
    args += ["--size", str(disk_mb * 2**20), "--tmpfs", INNER_TMP, "--dir", f"{INNER_TMP}/work",
             "--dir", f"{INNER_TMP}/home"]
    again = _existing([os.path.realpath(sys.base_prefix), sys.prefix, root, cache_dir()])
    for path in again:
        args += ["--ro-bind", path, path]
    keep = {package.name, Path(sys.prefix).name if _inside(sys.prefix, root) else None}
    secret = [entry for entry in root.iterdir() if entry.name not in keep and not entry.name.endswith(".egg-info")]
    for name in integrity.GRADER_ONLY:  # the modules themselves are empty copies (in ``withheld``) or /dev/null
        secret += ([] if str(package / name) in (withheld or {}) else [package / name]) + _pycs(package / name)
    for original in withheld or {}:
        secret += _pycs(Path(original))  # a stale compiled copy of the full module must not be loaded instead
    secret += list(hidden)
    # what lies under the host's /tmp is gone already, unless it was shown again: hide only what is still there
    secret = [p for p in _existing(secret)
              if not _inside(p, INNER_TMP) or any(_inside(p, shown_again) for shown_again in again)]
    for path in secret:
        if Path(path).is_dir():
            args += ["--tmpfs", path]
            emptied.append(path)
        else:
            args += ["--ro-bind", "/dev/null", path]
    for path in emptied:  # the empty folders are read-only too: /tmp is the one writable place
        args += ["--remount-ro", path]
    for original, stripped in (withheld or {}).items():
        args += ["--ro-bind", str(stripped), str(original)]
    args += ["--chdir", f"{INNER_TMP}/work"]
    for path in _existing(shown):
        args += ["--ro-bind", path, path]
    return args


class Kernel:
    """One learner's kernel: in the sandbox (default) or, for trusted notebooks, a plain process."""

    def __init__(self, folder: Path, deadline: float, *, sandboxed: bool = True, shown=(), hidden=(),
                 memory_mb: int = 6144, disk_mb: int = 512, named: dict | None = None, withheld: dict | None = None,
                 max_processes: int | None = None):
        self.folder, self.deadline, self.sandboxed = Path(folder), deadline, sandboxed
        self.shown, self.hidden, self.memory_mb, self.disk_mb = list(shown), list(hidden), memory_mb, disk_mb
        self.withheld = dict(withheld or {})  # {package file: stripped copy}: the graded tasks' references withheld
        self.max_processes = max_processes or default_max_processes()
        self.limit: ProcessLimit | None = None
        self.refused_processes = False  # a cell could not start a process (the limit held)
        self.named = {id(v): k for k, v in (named or {}).items()}  # the grader's real models, sent by name
        self.sent: dict[int, tuple] = {}  # id(model) -> (key, model): models whose weights the kernel has
        self.methods: set = set()
        self.proc = self.client = None

    # ------------------------------------------------------------------ start and stop
    def start(self) -> None:
        from jupyter_client import BlockingKernelClient

        from ..storage import cache_dir

        self.folder.mkdir(parents=True, exist_ok=True)
        inner = Path(INNER_TMP) if self.sandboxed else self.folder / "tmp"
        info = {"transport": "ipc", "ip": f"{inner}/kernel", "shell_port": 1, "iopub_port": 2, "stdin_port": 3,
                "control_port": 4, "hb_port": 5, "key": secrets.token_hex(16), "signature_scheme": "hmac-sha256",
                "kernel_name": ""}
        connection = self.folder / "connection.json"
        connection.write_text(json.dumps(info))
        memory = self.memory_mb * 2**20
        launch = [sys.executable, "-c", _LAUNCH, CONNECTION if self.sandboxed else str(connection), str(memory),
                  str(min(memory, self.disk_mb * 2**20)), str(self.max_processes if self.sandboxed else 0)]
        env = kernel_env(inner / "home", inner, cache_dir())
        # the kernel's own error output goes to a file: a pipe nobody reads would fill up and stop the kernel (the
        # file-size limit caps it); read back only to say why a kernel did not start
        self.stderr_path = self.folder / "kernel-stderr.txt"
        with open(self.stderr_path, "wb") as errors:
            if self.sandboxed:
                read, write = os.pipe()
                command = bwrap_command(self.shown, self.hidden, self.disk_mb, self.withheld) + [
                    "--ro-bind", str(connection), CONNECTION, "--info-fd", str(write), "--"] + launch
                self.limit = ProcessLimit(self.max_processes)
                self.proc = subprocess.Popen(command, env=env, pass_fds=(write,), start_new_session=True,
                                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                                             preexec_fn=self.limit.enter if self.limit.group else None)
                os.close(write)
            else:
                for sub in ("work", "tmp/home"):
                    (self.folder / sub).mkdir(parents=True, exist_ok=True)
                self.proc = subprocess.Popen(launch, env=env, cwd=self.folder / "work", start_new_session=True,
                                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors)
        if self.sandboxed:
            info["ip"] = f"/proc/{self._child_pid(read)}/root{inner}/kernel"  # the sandbox's /tmp, seen from outside
        self.client = BlockingKernelClient()
        self.client.load_connection_info(info)
        self.client.start_channels(hb=False)
        while True:  # the sockets appear when the kernel has started
            self._check_alive("start")
            try:
                self.client.wait_for_ready(timeout=min(2, self._left("start")))
                return
            except RuntimeError:
                continue

    def _child_pid(self, read: int) -> int:
        text = b""
        while time.monotonic() < self.deadline:
            ready, _, _ = select.select([read], [], [], 0.5)
            if ready:
                chunk = os.read(read, 4096)
                text += chunk
                try:
                    info = json.loads(text)
                    os.close(read)
                    return int(info["child-pid"])
                except ValueError:
                    if chunk:
                        continue
            self._check_alive("start")
        os.close(read)
        raise KernelStopped("timeout", "the sandbox did not start in time")

    def stop(self) -> None:
        """Kill the kernel and everything it started (the whole sandbox)."""
        if self.client is not None:
            self.client.stop_channels()
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
        if self.limit is not None:
            self.refused_processes |= self.limit.hit()
            self.limit.close()

    # ------------------------------------------------------------------ running code
    def _left(self, what: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise KernelStopped("timeout", f"timed out ({what})")
        return left

    def _check_alive(self, what: str) -> None:
        if self.proc.poll() is not None:
            tail = self.stderr_path.read_bytes()[-2000:].decode(errors="replace").strip().splitlines()[-1:] \
                if what == "start" else []
            raise KernelStopped("dead" if what != "start" else "error",
                                "the kernel died (crashed)" if what != "start" else
                                f"the kernel did not start ({tail[0][:200] if tail else f'exit {self.proc.returncode}'})")

    def execute(self, code: str, user_expressions: dict | None = None) -> dict:
        """Run ``code`` in the kernel; its execute_reply's content. Outputs are read and dropped."""
        msg_id = self.client.execute(code, store_history=False, allow_stdin=False, stop_on_error=False,
                                     user_expressions=user_expressions or {})
        while True:
            left = self._left("cell")
            self._check_alive("cell")
            for _ in range(1000):  # outputs: drop them, however many there are
                try:
                    self.client.get_iopub_msg(timeout=0)
                except queue.Empty:
                    break
            try:
                reply = self.client.get_shell_msg(timeout=min(0.2, left))
            except queue.Empty:
                continue
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                content = reply["content"]
                if content.get("status") == "error" and (content.get("ename") == "BlockingIOError" or
                                                         "Resource temporarily unavailable" in content.get("evalue", "")):
                    self.refused_processes = True  # fork or a thread refused: the process limit held
                return content

    def _request(self, request: dict):
        text = json.dumps(request)
        code = ("import specdec_course.course.sandbox as _specdec_sandbox\n"
                f"_specdec_answer = _specdec_sandbox.serve(globals(), {json.dumps(text)})")
        reply = self.execute(code, {"answer": "_specdec_answer"})
        if reply.get("status") != "ok":
            raise RuntimeError(f"the kernel could not run the call: {reply.get('ename')}: {reply.get('evalue')}")
        shown = reply.get("user_expressions", {}).get("answer", {}).get("data", {}).get("text/plain", "")
        if len(shown) > MAX_MESSAGE:
            raise ValueError(f"the answer is larger than {MAX_MESSAGE // 2**20} MB")
        import ast

        answer = json.loads(ast.literal_eval(shown))
        if "error" in answer:
            name, message = answer["error"]
            raise _exception(name, message)
        return answer

    # ------------------------------------------------------------------ the proxies' calls
    def name(self, name: str) -> Remote:
        return Remote(self, {"name": name}, name)

    def set(self, name: str, value) -> None:
        self._request({"op": "set", "name": name, "value": encode(value, self._encode)})

    def getattr(self, where: dict, attr: str):
        if (json.dumps(where), attr) in self.methods:
            return RemoteMethod(self, where, attr)
        value = self._request({"op": "getattr", "where": where, "attr": attr})["ok"]
        if isinstance(value, dict) and "__method__" in value:
            self.methods.add((json.dumps(where), attr))
            return RemoteMethod(self, where, attr)
        return decode(value, self._decode)

    def call(self, where: dict, attr: str | None, args: tuple, kwargs: dict):
        from ..perf import clock

        request = {"op": "call", "where": where, "attr": attr, "args": [encode(a, self._encode) for a in args],
                   "kwargs": {k: encode(v, self._encode) for k, v in kwargs.items()}}
        if clock.is_simulated():  # the model arguments' added costs go with it, in the kernel as here
            request["clock"] = [[index, *costs] for index, value in enumerate(args)
                                if (costs := clock.added_costs(value)) is not None]
        answer = self._request(request)
        if clock.is_simulated():
            clock.spend(1000 * answer.get("spent", 0.0))
        from . import checks

        for index, lengths in answer.get("passes", {}).items():
            checks.record_passes(args[int(index)], lengths)
        for index, state in answer.get("after", {}).items():
            _write_back(args[int(index)], state)
        return decode(answer["ok"], self._decode)

    def _encode(self, value):
        import torch

        if isinstance(value, Remote) and "ref" in object.__getattribute__(value, "_where"):
            return {"__ref__": object.__getattribute__(value, "_where")["ref"]}
        if isinstance(value, torch.nn.Module) and hasattr(value, "config"):
            if id(value) in self.named:
                return {"__model__": self.named[id(value)]}
            if id(value) in self.sent:
                return {"__model__": self.sent[id(value)][0]}
            key = f"m{len(self.sent)}"
            self.sent[id(value)] = (key, value)  # keeps the model alive, so its id is not reused
            return {"__model__": key, "class": type(value).__name__, "config_class": type(value.config).__name__,
                    "config": value.config.to_dict(), "state": {k: encode(v) for k, v in value.state_dict().items()}}
        if _is_cache(value):
            return {"__cache__": [[encode(k), encode(v)] for k, v in _cache_layers(value)]}
        if isinstance(value, torch.Generator):
            return {"__generator__": encode(value.get_state())}
        raise TypeError(f"the grader cannot send a {type(value).__name__} into the sandbox")

    def _decode(self, marker):
        if "__ref__" in marker:
            where = {"ref": marker["__ref__"]}
            if "specdec_course.drafters.base:Drafter" in marker.get("bases", []):
                return _remote_drafter_class()(self, where, marker.get("type", "drafter"))
            return Remote(self, where, marker.get("type", "object"))
        raise TypeError(f"unknown value in the sandbox's answer: {sorted(marker)}")


def _write_back(value, state: dict) -> None:
    """Make the grader's cache or generator what the learner's function left of the kernel's copy."""
    if "__cache__" in state and _is_cache(value):
        for index, (keys, values) in enumerate(state["__cache__"]):
            keys, values = decode(keys), decode(values)
            layer = value.layers[index] if index < len(value.layers) else None
            if layer is not None and getattr(layer, "is_initialized", True):
                layer.keys, layer.values = keys, values
            else:
                value.update(keys, values, index)
    elif "__generator__" in state:
        value.set_state(decode(state["__generator__"]))


_BUILTIN_ERRORS = {name: obj for name, obj in vars(builtins).items() if isinstance(obj, type) and issubclass(obj, Exception)}


def _exception(name: str, message: str) -> Exception:
    """The learner's error as an exception of the grader's: a built-in one by name, else a plain Exception subclass
    of that name (never a check's own CheckFailed or NotAttempted: what the learner raises cannot pass for a verdict)."""
    cls = _BUILTIN_ERRORS.get(name) or type(str(name)[:60] or "Error", (Exception,), {})
    try:
        return cls(message)
    except Exception:  # noqa: BLE001 - a built-in error that takes other arguments
        return type(str(name), (Exception,), {})(message)
