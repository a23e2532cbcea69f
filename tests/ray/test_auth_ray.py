"""Ray's token authentication stays on: a private instance that dbparallel starts refuses a
client without the token (and admits one with it, so the refusal is about the token)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]

SERVER = """
import sys
from dbparallel.config import load_config
from dbparallel.runtime.ray_connect import connect
import ray
connect(load_config([sys.argv[1]], ["runtime.num_cpus=1"]))
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # up until the test closes it, however long the clients take
"""
CLIENT = """
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
print("ran", ray.get(ray.remote(lambda: 41 + 1).remote(), timeout=60))
"""


def _client(address: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLIENT, address], env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_client_without_the_token_is_refused(tmp_path) -> None:
    home = tmp_path / "home"  # a token of this test's own, not the user's
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0")
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(ROOT / "jobs/tiny_cpu.yaml")],
                              env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        address = server.stdout.readline().strip()
        assert address, "the private instance did not start"
        token = (home / ".ray" / "auth_token").read_text().strip()
        # Both clients give up after 5 tries (about 5 s, not Ray's 20): they differ only in
        # the token.
        elsewhere = {**env, "HOME": str(tmp_path / "elsewhere"),
                     "RAY_gcs_server_port_wait_time_s": "5"}
        refused = _client(address, {**elsewhere, "RAY_AUTH_MODE": "disabled"})
        assert refused.returncode != 0 and "ran 42" not in refused.stdout
        insider = {**elsewhere, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
        admitted = _client(address, insider)
        assert "ran 42" in admitted.stdout, admitted.stderr[-2000:]
    finally:
        # killed with its instance: on SIGTERM ray.init's handler aborts it all the same
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, 9)
        server.stdin.close()
        server.wait(timeout=60)
