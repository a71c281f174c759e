"""The README's screenshots, taken from a freshly seeded demo: ``bin/screenshots``.

Seeds the demo (``manage.py demo``, as ``bin/demo`` does) into a temporary var directory, serves
it with gunicorn on a free local port, signs in as the demo's ML Lead through the login form and
saves full-page screenshots (1400 px wide, Debian's Chromium through Playwright) into
``docs/img/``: the overview, the model page and the incident page. A page this checkout does not
have yet (404) is skipped with a note; nothing else is touched.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "img"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
USER, PASSWORD = "lee-lead", "governance-demo"  # demo/management/commands/demo.py
PAGES = [
    ("overview", "/console/"),
    ("model", "/console/models/hotspot-classifier/"),
    ("incident", "/console/incidents/1/"),
]


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("gunicorn exited; see its output above")
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {seconds:.0f} s")


def main() -> None:
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"no Chromium at {CHROMIUM}: apt-get install -y chromium, or set CHROMIUM")
    var = Path(tempfile.mkdtemp(prefix="governance-screenshots-"))
    var.chmod(0o755)  # the artifact probe's unprivileged user reads the MLflow store in it
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")},
        "DJANGO_SETTINGS_MODULE": "config.settings.dev",
        "DJANGO_DEBUG": "false",
        "GOVERNANCE_VAR_DIR": str(var),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    manage = [sys.executable, "manage.py"]
    server = None
    try:
        say(f"seeding the demo into {var} (a few minutes)")
        for command in (["migrate", "--no-input", "-v0"], ["collectstatic", "--no-input", "-v0"]):
            subprocess.run(manage + command, cwd=REPO, env=env, check=True)
        subprocess.run([*manage, "demo"], cwd=REPO, env=env, check=True)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "config.wsgi:application",
                "--workers",
                "2",
                "--bind",
                f"127.0.0.1:{port}",
            ],
            cwd=REPO,
            env=env,
        )
        wait_until_up(url, server)
        shoot(url)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(var, ignore_errors=True)


def shoot(url: str) -> None:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        page = browser.new_context(viewport={"width": 1400, "height": 900}, base_url=url).new_page()
        page.goto("/admin/login/?next=/console/")
        page.get_by_label("Username").fill(USER)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/console/")
        for name, path in PAGES:
            response = page.goto(path)
            if response is None or response.status == 404:
                say(f"skipped {name}: {path} does not exist in this checkout yet")
                continue
            if response.status != 200:
                raise SystemExit(f"{path} answered {response.status}")
            page.wait_for_load_state("networkidle")
            target = OUT / f"{name}.png"
            page.screenshot(path=str(target), full_page=True)
            say(f"saved {target.relative_to(REPO)}")
        browser.close()


if __name__ == "__main__":
    main()
