"""Build and run govmomi's vSphere simulator (vcsim) for the vSphere provider tests.

Debian ships govmomi's library (``golang-github-vmware-govmomi-dev``, 0.24.2) but no ``vcsim`` binary, so
:func:`build_vcsim` builds our own launcher (``main.go`` next to this file) in GOPATH mode against a
patched copy of ``/usr/share/gocode``. The patches fix four simulator bugs pyvmomi hits:

* ``PropertyCollector.Fetch`` panics on an unset property (e.g. ``vm.snapshot`` of a VM without snapshots);
* snapshot revert/remove tasks carry the Snapshot as ``info.entity``, which pyvmomi refuses to parse;
* ``CloneVM_Task`` ignores ``spec.location.host`` and puts every clone on the template's host;
* ``CloneVM_Task`` clears the source's own disk backings (so a template loses its delta disk layer).

The launcher's ``-host-usage`` flag sets hosts' CPU and memory usage (vcsim gives every host the same),
so host selection and migration can be tested.

The build goes to ``$VCSIM_CACHE_DIR`` or ``/tmp/vmpooler-vcsim-<uid>`` and is reused while the sources
are unchanged. Nothing here touches the network.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "TEMPLATE",
    "VcsimServer",
    "build_vcsim",
    "last_build_error",
    "make_template",
    "provider_options",
    "start_vcsim",
    "vcsim_with_template",
]

GOCODE = Path("/usr/share/gocode")
GOVMOMI = Path("src/github.com/vmware/govmomi")
LAUNCHER = Path(__file__).with_name("main.go")

# (file under govmomi/, exact text, replacement): each text must occur exactly once.
_PATCHES: tuple[tuple[str, str, str], ...] = (
    (
        "simulator/property_collector.go",
        "\tobj := res.(*methods.RetrievePropertiesExBody).Res.Returnval.Objects[0]\n",
        "\trv := res.(*methods.RetrievePropertiesExBody).Res.Returnval\n"
        "\tif rv == nil || len(rv.Objects) == 0 {\n"
        "\t\tbody.Res = &internal.FetchResponse{}\n"
        "\t\treturn body\n"
        "\t}\n"
        "\tobj := rv.Objects[0]\n",
    ),
    (
        "simulator/property_collector.go",
        "\tif len(obj.PropSet) == 0 {\n\t\tfault := obj.MissingSet[0].Fault\n",
        "\tif len(obj.PropSet) == 0 && len(obj.MissingSet) == 0 {\n"
        "\t\tbody.Res = &internal.FetchResponse{}\n"
        "\t\treturn body\n"
        "\t}\n"
        "\tif len(obj.PropSet) == 0 {\n\t\tfault := obj.MissingSet[0].Fault\n",
    ),
    ("simulator/snapshot.go", 'CreateTask(v, "removeSnapshot"', 'CreateTask(v.Vm, "removeSnapshot"'),
    ("simulator/snapshot.go", 'CreateTask(v, "revertToSnapshot"', 'CreateTask(v.Vm, "revertToSnapshot"'),
    # CloneVM_Task puts every clone on the source's host: honour spec.location.host, and without one let
    # CreateVM pick a host of the target pool's compute resource (as DRS would) instead of the template's
    (
        "simulator/virtual_machine.go",
        "\t\t\tPool:   *pool,\n\t\t\tHost:   vm.Runtime.Host,\n",
        "\t\t\tPool:   *pool,\n\t\t\tHost:   req.Spec.Location.Host,\n",
    ),
    # ... and clears the fileName and parent of the source's own disk backings (shared pointers): a
    # template loses its delta disk layer on its first clone. Clone the disk and its backing first.
    (
        "simulator/virtual_machine.go",
        "\t\t\t\t// Leave FileName empty so CreateVM will just create a new one under VmPathName\n"
        '\t\t\t\tdisk.Backing.(*types.VirtualDiskFlatVer2BackingInfo).FileName = ""\n'
        "\t\t\t\tdisk.Backing.(*types.VirtualDiskFlatVer2BackingInfo).Parent = nil\n",
        "\t\t\t\tcopied, backing := *disk, *disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)\n"
        '\t\t\t\tbacking.FileName, backing.Parent = "", nil\n'
        "\t\t\t\tcopied.Backing = &backing\n"
        "\t\t\t\tdevice = &copied\n",
    ),
)

_last_error = ""


def last_build_error() -> str:
    """Why the last :func:`build_vcsim` returned ``None`` (empty after a success)."""
    return _last_error


def _cache_dir() -> Path:
    return Path(
        os.environ.get("VCSIM_CACHE_DIR") or Path(tempfile.gettempdir()) / f"vmpooler-vcsim-{os.getuid()}"
    )


def _fingerprint(src: Path) -> str:
    digest = hashlib.sha256(LAUNCHER.read_bytes())
    for _, old, new in _PATCHES:
        digest.update(old.encode() + new.encode())
    digest.update(str((src / "simulator" / "simulator.go").stat().st_mtime_ns).encode())
    return digest.hexdigest()[:16]


def build_vcsim() -> Path | None:
    """Build (or reuse) the patched vcsim launcher; return the binary, or ``None`` (see :func:`last_build_error`)."""
    global _last_error
    go = shutil.which("go")
    src = GOCODE / GOVMOMI
    if go is None:
        _last_error = "no `go` on PATH (apt-get install golang-go)"
        return None
    if not (src / "simulator").is_dir():
        _last_error = f"no govmomi sources in {src} (apt-get install golang-github-vmware-govmomi-dev)"
        return None
    cache = _cache_dir()
    binary = cache / f"vcsim-{_fingerprint(src)}"
    if binary.is_file():
        _last_error = ""
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        overlay = Path(tmp) / "gopath"
        shutil.copytree(src, overlay / GOVMOMI)
        for rel, old, new in _PATCHES:
            path = overlay / GOVMOMI / rel
            text = path.read_text()
            if text.count(old) != 1:
                _last_error = f"cannot patch {rel}: expected one {old!r} (govmomi version changed?)"
                return None
            path.write_text(text.replace(old, new))
        work = Path(tmp) / "launcher"
        work.mkdir()
        shutil.copy(LAUNCHER, work / "main.go")
        env = {
            **os.environ,
            "GO111MODULE": "off",
            "GOPATH": f"{overlay}:{GOCODE}",
            "GOFLAGS": "",
            "GOCACHE": str(cache / "gocache"),
        }
        out = Path(tmp) / "vcsim"
        done = subprocess.run(
            [go, "build", "-ldflags", "-s -w", "-o", str(out), "."],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            _last_error = f"go build failed: {done.stderr.strip()[-2000:]}"
            return None
        out.replace(binary)
    for stale in cache.glob("vcsim-*"):  # builds from older sources or patches
        if stale != binary:
            stale.unlink(missing_ok=True)
    _last_error = ""
    return binary


@dataclass(frozen=True)
class VcsimServer:
    """A running vcsim: ``url`` is ``https://host:port/sdk``."""

    host: str
    port: int
    username: str
    password: str

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}/sdk"


@contextlib.contextmanager
def start_vcsim(
    port: int = 0,
    *,
    binary: Path | None = None,
    username: str = "user",
    password: str = "pass",
    extra_args: tuple[str, ...] = (),
) -> Iterator[VcsimServer]:
    """Run vcsim on ``127.0.0.1:port`` (0 = random) with the default vCenter inventory; stop it on exit.

    Raises:
        RuntimeError: when vcsim cannot be built or does not report readiness within 30 s.
    """
    binary = binary or build_vcsim()
    if binary is None:
        raise RuntimeError(f"vcsim unavailable: {last_build_error()}")
    proc = subprocess.Popen(
        [str(binary), "-l", f"127.0.0.1:{port}", "-username", username, "-password", password, *extra_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        addr = ""
        for line in proc.stdout:
            if line.startswith("VCSIM_READY"):
                addr = line.split()[2]
                break
            if time.monotonic() > deadline:
                break
        if not addr:
            raise RuntimeError(f"vcsim did not start (exit code {proc.poll()})")
        host, _, got_port = addr.rpartition(":")
        yield VcsimServer(host=host, port=int(got_port), username=username, password=password)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


TEMPLATE = "templates/debian-12"
"""The template :func:`make_template` creates (its inventory path under the datacenter's VM folder)."""


def make_template(server: VcsimServer, timeout: float = 30.0) -> None:
    """Clone vcsim's stock VM ``DC0_H0_VM0`` into the template :data:`TEMPLATE` (raises if it fails)."""
    import ssl

    from pyVim import connect as connect_module
    from pyVmomi import vim as vim_module

    connect: Any = connect_module  # pyvmomi's API is untyped
    vim: Any = vim_module

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    si = connect.SmartConnect(
        host=server.host, port=server.port, user=server.username, pwd=server.password, sslContext=context
    )
    try:
        content = si.RetrieveContent()
        dc = content.searchIndex.FindByInventoryPath("DC0")
        source = content.searchIndex.FindByInventoryPath("DC0/vm/DC0_H0_VM0")
        folder = dc.vmFolder.CreateFolder(TEMPLATE.split("/")[0])
        spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(), template=True)
        task = source.CloneVM_Task(folder=folder, name=TEMPLATE.split("/")[1], spec=spec)
        deadline = time.monotonic() + timeout
        while task.info.state not in ("success", "error") and time.monotonic() < deadline:
            time.sleep(0.02)
        if task.info.state != "success":
            raise RuntimeError(f"template clone failed: {task.info.error}")
    finally:
        connect.Disconnect(si)


@contextlib.contextmanager
def vcsim_with_template(*extra_args: str) -> Iterator[VcsimServer]:
    """A fresh vcsim (its launcher built if needed) with :data:`TEMPLATE` made, for a test module's
    fixture; the test is skipped, saying why, when the launcher cannot be built here."""
    binary = build_vcsim()
    if binary is None:
        pytest.skip(f"vcsim cannot be built: {last_build_error()}")
    with start_vcsim(0, binary=binary, extra_args=extra_args) as server:
        make_template(server)
        yield server


def provider_options(server: VcsimServer, **extra: Any) -> dict[str, Any]:
    """A vSphere provider block for ``server``: its credentials, folders created as needed, no TCP
    check of the (absent) guests, two sessions; ``extra`` adds or overrides keys."""
    return {
        "server": server.host,
        "port": server.port,
        "username": server.username,
        "password": server.password,
        "insecure": True,
        "create_folders": True,
        "ready_check_port": 0,
        "connection_pool_size": 2,
        **extra,
    }
