"""A real S3 API on loopback (moto's server, in a process of its own) whose request log says every
request svdflow made: the tests and `benchmarks/bench_record.py` count them from it.

The server's process writes werkzeug's access log (`"GET /bucket/key?... HTTP/1.1" 200 -`) to a file;
`requests()` reads what was logged since a mark. Clients find it through AWS_ENDPOINT_URL (botocore
and s3fs read it), set with made-up credentials by `environment()`.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

# werkzeug colours the lines of answers other than 200 (a 404 HEAD, a 206 ranged GET) with ANSI
# escapes, even into a file: a count that missed them would leave those requests out.
REQUEST = re.compile(r'"(?:\x1b\[[0-9;]*m)*(GET|PUT|HEAD|POST|DELETE) (\S+)')
START_TIMEOUT_S = 60.0  # moto's imports take seconds on a loaded machine


class MotoServer:
    def __init__(self, log: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = log
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"moto's server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """What points boto3 and s3fs at this server."""
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_DEFAULT_REGION": "us-east-1"}

    def mark(self) -> int:
        """Where the log is now: `requests(mark)` gives what came after."""
        return len(self.log.read_text().splitlines())

    def requests(self, since: int = 0) -> list[tuple[str, str]]:
        """(method, path with its query) of every request logged after `since`."""
        lines = self.log.read_text().splitlines()[since:]
        return [(m[1], m[2]) for m in map(REQUEST.search, lines) if m is not None]

    def counts(self, since: int = 0) -> dict[str, int]:
        """Requests after `since` by method, and their total."""
        counts = Counter(method for method, _ in self.requests(since))
        return {"total": sum(counts.values()), **counts}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id="test", aws_secret_access_key="test",
                            region_name="us-east-1")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait()
