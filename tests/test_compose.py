"""docker-compose.yml runs web, gateway and workers with no shared disk (issue 14).

Docker is not available to the suite, so the file is checked as YAML: the app services mount no
volume and keep their data in MinIO, whose buckets a one-shot service creates before they start,
and the ``two-hosts`` profile adds a second worker host.
"""

from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"
APP_IMAGE = "model-governance:latest"


def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_app_services_share_no_volume_and_store_data_in_the_object_store():
    apps = {name: s for name, s in services().items() if s.get("image") == APP_IMAGE}
    assert {"web", "gateway", "worker", "worker-urgent", "beat", "migrate"} <= set(apps)
    for name, service in apps.items():
        assert not service.get("volumes"), f"{name} mounts a volume"
        env = service["environment"]
        assert env["GOVERNANCE_STORAGE_URL"].startswith("s3://"), name
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000", name
        assert service["depends_on"]["minio-buckets"] == {
            "condition": "service_completed_successfully"
        }, name


def test_minio_buckets_are_created_at_start_and_two_worker_hosts_have_a_profile():
    found = services()
    assert "minio" in found and "healthcheck" in found["minio"]
    script = found["minio-buckets"]["command"][0]
    assert "mc mb --ignore-existing" in script and "--with-lock" in script
    two_hosts = sorted(n for n, s in found.items() if "two-hosts" in s.get("profiles", []))
    assert two_hosts == ["worker-b", "worker-urgent-b"]
