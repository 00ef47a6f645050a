"""Real Dockerfile builders started by the tests: buildah (runc, --network none) and Debian's dockerd
(BuildKit and the classic builder), each with its own storage under the test's temporary directory.

Both reach the suite's registry on 127.0.0.1 over plain HTTP (buildah: --tls-verify=false; dockerd
treats 127.0.0.0/8 as insecure by default). Builds run with --network none: only the registry pull
of FROM / --from images happens outside the build container, as in any CI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def unpacked_docker_engine(suite: str = "trixie") -> Path:
    """A Debian suite's Docker, unpacked into .cache/ by scripts/docker-engine.sh (fetched on first use;
    a RuntimeError with its output if that fails): trixie's (Debian 13: dockerd 26.1, containerd 1.7,
    buildx), which the tests use, or forky's (Debian testing: dockerd 28.5 when measured)."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "docker-engine.sh"
    proc = subprocess.run([str(script), suite], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/docker-engine.sh failed: {proc.stderr[-2000:]}")
    return Path(proc.stdout.strip())


def dockerd_version(engine: Path | None = None) -> str:
    """What `dockerd --version` prints for an unpacked engine (the system's without one), for the
    benchmarks' records."""
    binary = str(engine / "usr" / "sbin" / "dockerd") if engine is not None else shutil.which("dockerd")
    if binary is None:
        return "dockerd not installed"
    proc = subprocess.run([binary, "--version"], capture_output=True, text=True)
    return proc.stdout.strip() or proc.stderr.strip()


@dataclass
class Buildah:
    root: Path
    name: str = "buildah"

    def build(self, context: Path, tag: str, build_args: dict[str, str] | None = None,
              pull_always: bool = True) -> subprocess.CompletedProcess:
        binary = shutil.which("buildah")
        assert binary, "buildah is not installed: run scripts/bootstrap.sh --test"
        args = [a for k, v in (build_args or {}).items() for a in ("--build-arg", f"{k}={v}")]
        cmd = [binary, "--root", str(self.root / "root"), "--runroot", str(self.root / "run"),
               "--storage-driver", "vfs", "bud", "--isolation", "oci", "--runtime", "runc", "--network", "none",
               "--tls-verify=false", *(["--pull-always"] if pull_always else []), *args,
               "-t", tag, "-f", "Dockerfile", "."]
        return subprocess.run(cmd, cwd=context, capture_output=True, text=True, timeout=600)


class Dockerd:
    """dockerd with its own data-root, exec-root and socket; no iptables, no bridge, no ip forwarding.

    `root` must be short: containerd's socket lives under it, and unix socket paths stop at 108 bytes.
    """

    def __init__(self, root: Path, engine: Path | None = None, containerd_store: bool = False,
                 unpigz: bool | None = None) -> None:
        """`engine`: an unpacked Docker (usr/sbin/dockerd, usr/bin/docker, containerd, the buildx plugin),
        as scripts/docker-engine.sh leaves it; the system's Docker without it. `containerd_store`: images
        in containerd's store and snapshotter instead of the overlay2 graph driver (dockerd >= 24).
        `unpigz`: dockerd and containerd gunzip layers with `unpigz` when it is on PATH and with Go's
        gzip otherwise; True requires it (Docker's own packages recommend pigz), False turns it off
        (Debian's docker.io does not pull it in), None leaves it to what the machine has."""
        if engine is None:
            binary = shutil.which("dockerd")
            assert binary, "dockerd is not installed: run scripts/bootstrap.sh --test (Debian's docker.io)"
            self._cli = "/usr/bin/docker"
            self._path = os.environ.get("PATH", "")
        else:
            binary = str(engine / "usr" / "sbin" / "dockerd")
            assert os.access(binary, os.X_OK), f"{binary}: no such engine (scripts/docker-engine.sh installs it)"
            self._cli = str(engine / "usr" / "bin" / "docker")
            # its containerd and docker-proxy before the system's
            self._path = f"{engine / 'usr' / 'bin'}:{engine / 'usr' / 'sbin'}:{os.environ.get('PATH', '')}"
            plugins = root / "client-config" / "cli-plugins"
            plugins.mkdir(parents=True, exist_ok=True)
            for plugin in (engine / "usr" / "libexec" / "docker" / "cli-plugins").glob("docker-*"):
                (plugins / plugin.name).symlink_to(plugin)
        env = {**os.environ, "PATH": self._path}
        if unpigz is True:
            assert shutil.which("unpigz", path=self._path), "unpigz is not installed: run scripts/bootstrap.sh --test"
            env.pop("MOBY_DISABLE_PIGZ", None)
            env.pop("CONTAINERD_DISABLE_PIGZ", None)
        elif unpigz is False:
            env["MOBY_DISABLE_PIGZ"] = env["CONTAINERD_DISABLE_PIGZ"] = "true"
        self.root = root
        self.socket = root / "docker.sock"
        root.mkdir(parents=True, exist_ok=True)
        if len(str(root / "exec" / "containerd" / "containerd.sock")) > 100:
            raise ValueError(f"{root}: too long a path for dockerd's sockets")
        config = root / "daemon.json"
        config.write_text(json.dumps({"features": {"containerd-snapshotter": True}} if containerd_store
                                     else {"storage-driver": "overlay2"}))
        self._log = open(root / "dockerd.log", "wb")  # noqa: SIM115 (the daemon's log, closed in stop)
        self._proc = subprocess.Popen(
            [binary, "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
             "--pidfile", str(root / "dockerd.pid"), "-H", f"unix://{self.socket}", "--iptables=false",
             "--ip-forward=false", "--bridge=none", "--config-file", str(config)],
            stdout=self._log, stderr=self._log, start_new_session=True, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"dockerd exited: {(root / 'dockerd.log').read_text()[-2000:]}")
            if self.socket.exists() and self.docker("version").returncode == 0:
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("dockerd did not answer within 60 s")

    def docker(self, *args: str, cwd: Path | None = None, buildkit: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "1" if buildkit else "0",
               "DOCKER_CONFIG": str(self.root / "client-config")}
        # Debian's 20.10 CLI drives BuildKit inside dockerd without a buildx plugin; a newer engine's CLI
        # goes through its buildx plugin (the "docker" driver: the same BuildKit inside dockerd).
        return subprocess.run([self._cli, *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=600)

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._log.close()
        # dockerd leaves its default network namespace bind-mounted under exec-root: unmount what is ours
        root = str(self.root.resolve())
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f]
        for point in sorted((m for m in mounts if m.startswith(root)), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)


@dataclass
class DockerBuilder:
    daemon: Dockerd
    buildkit: bool

    @property
    def name(self) -> str:
        return "docker-buildkit" if self.buildkit else "docker-classic"

    def build(self, context: Path, tag: str) -> subprocess.CompletedProcess:
        args = ["build", "--network", "none", "--pull", "-t", tag, "."]
        if self.buildkit:
            args[1:1] = ["--progress", "plain"]
        return self.daemon.docker(*args, cwd=context, buildkit=self.buildkit)
