"""Custom domains and uploaded certificates as the API takes them: what it
shows and records in each deployment, what it refuses (a 422 naming the field,
never echoing the value; a 409 for a domain another app has, in any project,
also when two requests race), the checks of an uploaded certificate, and that
the key is in no response, audit entry or row in the clear. The cluster side
is tests/api/test_domains.py."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import select

from api.main import create_app
from conveyor.clients.db.models import AppCertificate, AppDomain
from conveyor.clients.db.session import migrate, read_scope
from conveyor.domain.vocabulary import DeploymentStatus
from tests.support.certificates import key_pem, make_certificate, new_key
from tests.support.in_process import finish, new_project, remove, rows, settings_for

GOOD = {"image_url": "registry.test/web:1", "port": 8080}


def domain() -> str:
    return f"shop-{uuid.uuid4().hex[:8]}.example.com"


def named(response, field: str) -> bool:
    return response.status_code == 422 and any(error["loc"][:2] == ["body", field] for error in response.json()["detail"])


def running(local, project, **fields) -> dict:
    app = project.admin.create_app(**fields)
    finish(local.settings, project.admin.deployments(app["id"])[0]["id"])
    return app


def test_domains_are_shown_recorded_in_the_deployment_and_a_change_is_a_release(local, project):
    first, second = domain(), domain()
    app = running(local, project, domains=[first, second, first], redirect_http=True)
    assert app["domains"] == [first, second] and app["redirect_http"] is True
    assert project.viewer.call("GET", f"/apps/{app['id']}", 200).json()["domains"] == [first, second]
    assert project.admin.deployments(app["id"])[0]["domains"] == [first, second]
    changed = project.admin.call("PATCH", f"/apps/{app['id']}", 202, json={"domains": [second]}).json()
    assert changed["domains"] == [second]
    latest = project.admin.deployments(app["id"])[0]
    assert latest["operation"] == "update" and latest["domains"] == [second]
    assert "domains" in project.admin.call("GET", f"/apps/{app['id']}/audit", 200).json()[0]["details"]
    # The same list again is no release.
    assert project.admin.call("PATCH", f"/apps/{app['id']}", json={"domains": [second]}).status_code == 200
    listed = project.viewer.call("GET", f"/apps/{app['id']}/domains", 200).json()
    assert listed == {
        "default_host": f"{app['slug']}.{local.settings.base_domain}",
        "redirect_http": True,
        "domains": [{"domain": second, "certificate": {**NONE}, "deployment_id": None}],
    }
    # A deployer may not change domains.
    assert project.deployer.call("PATCH", f"/apps/{app['id']}", json={"domains": []}).status_code == 403


NONE = {"source": "none", "state": "none", "secret_name": None, "expires_at": None, "names": None, "issuer": None,
        "fingerprint": None, "uploaded_at": None, "uploaded_by": None, "message": None}
SECRET = "s3cret-Not-A-Domain"


@pytest.mark.parametrize(
    "domains",
    [[f"{SECRET}.example.com"], [f"*.{SECRET.lower()}.com"], [SECRET.lower()], [f"{SECRET.lower()}..com"], ["10.0.0.1"],
     [f"{SECRET.lower()}-.com"], [f"a.{'b' * 64}.com"], [f"d{i}.{SECRET.lower()}.com" for i in range(21)], f"{SECRET.lower()}.com", [7]],
)
def test_a_bad_domain_is_a_422_naming_domains_without_repeating_it_and_writes_nothing(local, project, domains):
    before = rows(local.settings)
    created = project.admin.call("POST", "/apps", json={**GOOD, "name": f"bad-{uuid.uuid4().hex[:6]}", "domains": domains})
    assert named(created, "domains"), created.text
    assert SECRET.lower() not in created.text.lower()
    assert rows(local.settings) == before
    app = project.admin.create_app()
    patched = project.admin.call("PATCH", f"/apps/{app['id']}", json={"domains": domains})
    assert named(patched, "domains") and SECRET.lower() not in patched.text.lower(), patched.text


def test_the_platforms_own_hosts_are_not_custom_domains(local, project):
    app = project.admin.create_app()
    before = rows(local.settings)
    for name in (f"{app['slug']}.{local.settings.base_domain}", f"other.{local.settings.base_domain}", local.settings.base_domain):
        refused = project.admin.call("PATCH", f"/apps/{app['id']}", json={"domains": [name]})
        assert named(refused, "domains") and "base domain" in refused.text, refused.text
    assert rows(local.settings) == before


def test_a_domain_of_another_app_in_any_project_is_a_409_until_that_app_lets_it_go(local, project):
    taken = domain()
    owner = running(local, project, domains=[taken])
    other = new_project(local.settings, local.app)
    before = rows(local.settings)
    refused = other.admin.call("POST", "/apps", json={**GOOD, "name": "thief", "domains": [domain(), taken]})
    assert refused.status_code == 409 and "domain #2" in refused.text and owner["id"] not in refused.text, refused.text
    # Nor in the owner's own project, nor by PATCH.
    assert project.admin.call("POST", "/apps", json={**GOOD, "name": "twin", "domains": [taken]}).status_code == 409
    mine = other.admin.create_app()
    assert other.admin.call("PATCH", f"/apps/{mine['id']}", json={"domains": [taken]}).status_code == 409
    assert rows(local.settings) == {**before, "apps": before["apps"] + 1, "deployments": before["deployments"] + 1, "audit_entries": before["audit_entries"] + 1, "handoffs": before["handoffs"] + 1}
    # Dropped by its owner: free.
    project.admin.call("PATCH", f"/apps/{owner['id']}", 202, json={"domains": None})
    assert other.admin.call("PATCH", f"/apps/{mine['id']}", 202, json={"domains": [taken]}).json()["domains"] == [taken]
    # Deleted with its app: free once the app is gone (not while its Ingress may still serve it).
    other.admin.call("DELETE", f"/apps/{mine['id']}", 202)
    assert project.admin.call("PATCH", f"/apps/{owner['id']}", json={"domains": [taken]}).status_code == 409
    remove(local.settings, mine["id"])
    assert project.admin.call("PATCH", f"/apps/{owner['id']}", 202, json={"domains": [taken]}).json()["domains"] == [taken]


def test_two_creates_racing_for_one_domain_in_two_projects_exactly_one_wins(local, project):
    contested = domain()
    others = [project, new_project(local.settings, local.app), new_project(local.settings, local.app), new_project(local.settings, local.app)]
    barrier = threading.Barrier(len(others))
    codes: list[int] = []

    def create(p) -> None:
        barrier.wait()
        codes.append(p.admin.call("POST", "/apps", json={**GOOD, "name": "racer", "domains": [contested]}).status_code)

    threads = [threading.Thread(target=create, args=(p,)) for p in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [201, 409, 409, 409], codes
    with read_scope(local.settings.effective_database_url) as session:
        assert len(session.scalars(select(AppDomain).where(AppDomain.domain == contested)).all()) == 1


def test_a_revert_restores_the_targets_domains_and_is_a_409_if_another_app_took_one_since(local, project):
    old, new = domain(), domain()
    app = running(local, project, domains=[old])
    v1 = project.admin.deployments(app["id"])[0]
    project.admin.call("PATCH", f"/apps/{app['id']}", 202, json={"domains": [new]})
    finish(local.settings, project.admin.deployments(app["id"])[0]["id"])
    reverted = project.deployer.call("POST", f"/apps/{app['id']}/deployments/{v1['id']}/revert", 202).json()
    assert reverted["domains"] == [old]
    assert project.admin.call("GET", f"/apps/{app['id']}", 200).json()["domains"] == [old]
    finish(local.settings, reverted["id"])
    # The domain of v2 is free again; another app takes it, and a revert to v2 is refused.
    v2 = project.admin.deployments(app["id"])[1]
    assert v2["domains"] == [new]
    other = new_project(local.settings, local.app)
    other.admin.create_app(domains=[new])
    before = rows(local.settings)
    refused = project.deployer.call("POST", f"/apps/{app['id']}/deployments/{v2['id']}/revert")
    assert refused.status_code == 409 and "domain #1" in refused.text, refused.text
    assert rows(local.settings) == before


# --- certificates -------------------------------------------------------------


def put(api, app_id: str, name: str, certificate: str, key: str, expect: int | None = None):
    return api.call("PUT", f"/apps/{app_id}/domains/{name}/certificate", expect, json={"certificate": certificate, "key": key})


def test_an_uploaded_certificate_is_checked_stored_sealed_shown_with_its_expiry_and_released(local, project):
    name = domain()
    app = running(local, project, domains=[name])
    made = make_certificate(name)
    before = rows(local.settings)
    # Checked before anything is stored: each refusal a 422 naming the field.
    assert named(put(project.admin, app["id"], name, made.certificate, key_pem(new_key())), "key")
    expired = make_certificate(name, days=-1, valid_from_days=-10)
    refused = put(project.admin, app["id"], name, expired.certificate, expired.key)
    assert named(refused, "certificate") and "expired" in refused.text, refused.text
    elsewhere = make_certificate("other.example.com")
    assert named(put(project.admin, app["id"], name, elsewhere.certificate, elsewhere.key), "certificate")
    assert named(put(project.admin, app["id"], name, "garbage", made.key), "certificate")
    assert put(project.admin, app["id"], "not-mine.example.com", made.certificate, made.key).status_code == 404
    # Admin only.
    assert put(project.deployer, app["id"], name, made.certificate, made.key).status_code == 403
    assert rows(local.settings) == before

    uploaded = put(project.admin, app["id"], name, made.certificate, made.key, 202).json()
    certificate = uploaded["certificate"]
    assert certificate["source"] == "uploaded" and certificate["names"] == [name]
    assert certificate["expires_at"] == made.not_after.isoformat().replace("+00:00", "Z")
    assert certificate["secret_name"] == f"{app['slug']}.tls.{name}"
    # A release of the running image brings it to the cluster.
    [release] = [d for d in project.admin.deployments(app["id"]) if d["id"] == uploaded["deployment_id"]]
    assert release["operation"] == "update" and release["status"] in ("pending", "queued")
    listed = project.viewer.call("GET", f"/apps/{app['id']}/domains", 200).json()["domains"]
    assert listed[0]["certificate"] == certificate

    # The key: sealed in its row, and nowhere in any answer or audit entry.
    key_body = made.key.split("-----")[2].strip().splitlines()[1]
    with read_scope(local.settings.effective_database_url) as session:
        row = session.get(AppCertificate, (app["id"], name))
        assert row is not None and "PRIVATE KEY" not in row.key_sealed and key_body not in row.key_sealed
    answers = [
        uploaded,
        project.admin.call("GET", f"/apps/{app['id']}", 200).json(),
        project.admin.call("GET", f"/apps/{app['id']}/domains", 200).json(),
        project.admin.call("GET", f"/apps/{app['id']}/audit", 200).json(),
        project.admin.deployments(app["id"]),
    ]
    assert all("PRIVATE KEY" not in str(answer) and key_body not in str(answer) for answer in answers)
    audit = project.admin.call("GET", f"/apps/{app['id']}/audit", 200).json()
    assert any(entry["action"] == "certificate_uploaded" and name in entry["details"] for entry in audit)

    # Deleted: the next release removes the Secret.
    deleted = project.admin.call("DELETE", f"/apps/{app['id']}/domains/{name}/certificate", 202).json()
    assert deleted["certificate"]["source"] == "none" and deleted["deployment_id"]
    assert project.admin.call("DELETE", f"/apps/{app['id']}/domains/{name}/certificate").status_code == 404


def test_a_certificate_uploaded_before_anything_runs_waits_for_the_first_release(local, project):
    name = domain()
    app = project.admin.create_app(domains=[name])
    finish(local.settings, project.admin.deployments(app["id"])[0]["id"], DeploymentStatus.FAILED, "would not start")
    made = make_certificate(f"*.{name.split('.', 1)[1]}")
    stored = put(project.admin, app["id"], name, made.certificate, made.key, 200).json()
    assert stored["deployment_id"] is None and stored["certificate"]["names"] == [f"*.{name.split('.', 1)[1]}"]
    assert len(project.admin.deployments(app["id"])) == 1


def test_with_a_cluster_issuer_domains_without_an_upload_are_cert_managers(tmp_path):
    """An API whose settings name a ClusterIssuer; its cluster is unreachable
    here, so the Certificate's state is pending and says it could not be read
    (tests/api/test_domains.py reads a real one)."""
    from fastapi.testclient import TestClient

    from tests.support.in_process import BASE_URL

    settings = settings_for(tmp_path).model_copy(update={"tls_cluster_issuer": "letsencrypt"})
    migrate(settings.effective_database_url)
    app = create_app(settings)
    with TestClient(app, base_url=BASE_URL):
        project = new_project(settings, app)
        first, second = domain(), domain()
        created = project.admin.create_app(domains=[first, second])
        finish(settings, project.admin.deployments(created["id"])[0]["id"])
        made = make_certificate(second)
        put(project.admin, created["id"], second, made.certificate, made.key, 202)
        listed = {d["domain"]: d["certificate"] for d in project.viewer.call("GET", f"/apps/{created['id']}/domains", 200).json()["domains"]}
        assert listed[first]["source"] == "cert-manager" and listed[first]["state"] == "pending"
        assert listed[first]["issuer"] == "letsencrypt" and listed[first]["secret_name"] == f"{created['slug']}.tls.{first}"
        assert "could not be read" in listed[first]["message"]
        assert listed[second]["source"] == "uploaded"


def test_a_retry_whose_snapshot_names_a_domain_another_app_took_since_is_a_409(local, project):
    name = domain()
    app = running(local, project)
    project.admin.call("PATCH", f"/apps/{app['id']}", 202, json={"domains": [name]})
    failed = project.admin.deployments(app["id"])[0]
    finish(local.settings, failed["id"], DeploymentStatus.FAILED, "would not start")
    project.admin.call("PATCH", f"/apps/{app['id']}", 202, json={"domains": None})
    new_project(local.settings, local.app).admin.create_app(domains=[name])
    before = rows(local.settings)
    refused = project.deployer.call("POST", f"/apps/{app['id']}/deployments/{failed['id']}/retry")
    assert refused.status_code == 409 and "domain #1" in refused.text, refused.text
    assert rows(local.settings) == before

