"""The zero-to-jupyterhub files: values valid for the chart, and the hub code run for real.

The hub code (configs/z2jh-hub-nbinit.py, embedded in the values) is executed the way the
chart's jupyterhub_config.py executes hub.extraConfig, and a real KubeSpawner builds the
pod through kubespawner.objects.make_pod. The only stand-in is the Kubernetes API's
read_namespace (there is no cluster): it answers with real V1Namespace objects.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from helpers import hubcode
from kubernetes_asyncio.client import V1Namespace, V1ObjectMeta
from kubernetes_asyncio.client.rest import ApiException
from traitlets.config import Config

from nbinit import fetch
from nbinit.errors import NbinitError
from nbinit.log import Log

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
# CI checks the shared files out at ../shared, beside the repository.
SCHEMA = REPO.parent / "shared" / "schemas" / "z2jh-values.schema.yaml"
HUB_CODE = hubcode.HUB_CODE
VALUES_FILES = sorted(CONFIGS.glob("z2jh-values*.yaml"))
ADMIN_CONFIG = CONFIGS / "admin-config.yaml"


def load_values(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def without_required(node: Any) -> Any:
    """The schema with `required` dropped: Helm validates values merged over the chart's
    defaults, which fill every required key; every key a file sets is still checked."""
    if isinstance(node, dict):
        return {k: without_required(v) for k, v in node.items() if k != "required"}
    if isinstance(node, list):
        return [without_required(v) for v in node]
    return node


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    if not SCHEMA.exists():
        pytest.fail(f"{SCHEMA} is missing: check out the shared files beside the repository")
    return jsonschema.Draft7Validator(without_required(yaml.safe_load(SCHEMA.read_text())))


def test_there_are_values_files():
    assert [p.name for p in VALUES_FILES] == ["z2jh-values-poststart.yaml", "z2jh-values.yaml"]


@pytest.mark.parametrize("path", VALUES_FILES, ids=lambda p: p.name)
def test_values_validate_against_the_chart_schema(validator, path):
    errors = [
        f"{'.'.join(map(str, e.path))}: {e.message}"
        for e in validator.iter_errors(load_values(path))
    ]
    assert errors == []


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        pytest.param("singleuser", "lifecycleHook", {}, id="misspelt-key"),
        pytest.param("singleuser", "uid", "0", id="uid-as-string"),
        pytest.param("singleuser", "cmd", {"nbinit": "start"}, id="cmd-as-mapping"),
    ],
)
def test_the_schema_check_catches_mistakes(validator, section, key, value):
    values = copy.deepcopy(load_values(VALUES_FILES[0]))
    values[section][key] = value
    assert len(list(validator.iter_errors(values))) == 1


@pytest.mark.parametrize("path", VALUES_FILES, ids=lambda p: p.name)
def test_values_embed_the_hub_code_unchanged(path):
    assert load_values(path)["hub"]["extraConfig"]["nbinit"] == HUB_CODE.read_text()


def test_example_configs_validate():
    from nbinit import config, schema

    for path, rules in (
        (ADMIN_CONFIG, schema.CONFIG),
        (CONFIGS / "user-dotfile.yaml", schema.DOTFILE),
    ):
        data = path.read_bytes()
        _, errors, warnings = config.review(data, str(path), rules)
        assert (errors, warnings) == ([], [])


def test_rbac_grants_what_kubespawner_does_with_user_namespaces():
    role, binding, namespace = yaml.safe_load_all((CONFIGS / "z2jh-rbac.yaml").read_text())
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    needed = {("namespaces", "get"), ("namespaces", "create"), ("events", "watch")}
    needed |= {("pods", v) for v in ("get", "list", "watch", "create", "delete")}
    needed |= {("persistentvolumeclaims", v) for v in ("get", "create")}
    assert needed <= granted
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hub", "namespace": "jhub"}]
    assert namespace["metadata"]["labels"] == {"nstype": "user"}


# -- the hub code, run for real -------------------------------------------------------


def spawner_config(values: dict[str, Any]) -> Config:
    """The part of the chart's jupyterhub_config.py that maps the values nbinit uses."""
    c = Config()
    user = values["singleuser"]
    c.KubeSpawner.uid = user["uid"]
    c.KubeSpawner.fs_gid = user["fsGid"]
    c.KubeSpawner.start_timeout = user["startTimeout"]
    c.KubeSpawner.environment = dict(user.get("extraEnv", {}))
    c.KubeSpawner.image = f"{user['image']['name']}:{user['image']['tag']}"
    c.KubeSpawner.cmd = user.get("cmd", "jupyterhub-singleuser")  # the chart's default
    c.KubeSpawner.profile_list = user.get("profileList", [])
    if "lifecycleHooks" in user:
        c.KubeSpawner.lifecycle_hooks = user["lifecycleHooks"]
    for cls, traits in values["hub"].get("config", {}).items():
        for key, value in traits.items():
            c[cls][key] = value
    return c


def run_hub_code(values: dict[str, Any], config_path: Path) -> tuple[Config, dict[str, Any]]:
    return hubcode.run_hub_code(config_path, values, spawner_config(values))


class FakeCoreV1Api:
    """read_namespace only, answering from a dict the way the API server would."""

    def __init__(self, namespaces: dict[str, tuple[dict[str, str], dict[str, str]]]) -> None:
        self.namespaces = namespaces
        self.reads: list[str] = []

    async def read_namespace(self, name: str) -> V1Namespace:
        self.reads.append(name)
        if name not in self.namespaces:
            raise ApiException(status=404, reason="Not Found")
        labels, annotations = self.namespaces[name]
        return V1Namespace(metadata=V1ObjectMeta(name=name, labels=labels, annotations=annotations))


class FakeUser:
    def __init__(self, name: str) -> None:
        self.name = name
        self.id = 7
        self.url = f"/user/{name}/"
        self.escaped_name = name


@pytest.fixture
def kubeconfig(monkeypatch):
    """KubeSpawner loads a cluster's client config when built; there is none, and the one
    API call the hub code makes goes to FakeCoreV1Api."""
    import kubespawner.spawner

    monkeypatch.setattr(kubespawner.spawner, "load_config", lambda **kwargs: None)


async def spawn_pod(values, config_path, namespaces, profile, user="alice"):
    from kubespawner import KubeSpawner

    c, _ = run_hub_code(values, config_path)
    spawner = KubeSpawner(_mock=True, config=c, user=FakeUser(user))
    spawner.api = FakeCoreV1Api(namespaces)
    spawner.user_options = {"profile": profile}
    await spawner.load_user_options()
    await spawner.run_pre_spawn_hook()
    pod = await spawner.get_pod_manifest()
    env = {item.name: item.value for item in pod.spec.containers[0].env}
    return spawner, pod, env


ALICE_NAMESPACE = {"alice": ({"nstype": "user"}, {"uid": "4321"})}


@pytest.fixture
def served_config(tmp_path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_bytes(ADMIN_CONFIG.read_bytes())
    return path


@pytest.mark.parametrize(
    ("profile", "args"),
    [
        pytest.param(
            "python", ["nbinit", "start", "--", "jupyterhub-singleuser"], id="plain-python"
        ),
        pytest.param("docker-stacks", ["jupyterhub-singleuser"], id="docker-stacks"),
        pytest.param("gpu-pytorch", ["jupyterhub-singleuser"], id="ngc-pytorch"),
    ],
)
def test_pod_runs_nbinit_as_root_with_the_namespace_uid(kubeconfig, served_config, profile, args):
    values = load_values(CONFIGS / "z2jh-values.yaml")
    spawner, pod, env = asyncio.run(spawn_pod(values, served_config, ALICE_NAMESPACE, profile))
    assert spawner.api.reads == ["alice"]
    assert spawner.namespace == "alice"
    container = pod.spec.containers[0]
    assert container.args[: len(args)] == args
    assert container.command is None  # the image's ENTRYPOINT (start.sh, NGC's) is kept
    assert container.security_context == {"runAsUser": 0, "allowPrivilegeEscalation": False}
    assert env["NB_UID"] == "4321" and env["NB_GID"] == "4321"
    assert (
        env["NBINIT_CONFIG_URL"] == "http://hub.jhub.svc.cluster.local:8081/hub/nbinit/config.yaml"
    )
    assert env["NBINIT_CONFIG_SHA256"] == hashlib.sha256(served_config.read_bytes()).hexdigest()
    if profile == "gpu-pytorch":
        assert container.resources.limits["nvidia.com/gpu"] == "1"


async def pod_from_form(values, config_path, formdata):
    """The spawn a browser's form submission makes: KubeSpawner's own form parsing,
    user-option loading and pod building (make_pod), as the hub calls them."""
    from kubespawner import KubeSpawner

    c, _ = run_hub_code(values, config_path)
    spawner = KubeSpawner(_mock=True, config=c, user=FakeUser("alice"))
    spawner.api = FakeCoreV1Api(ALICE_NAMESPACE)
    spawner.user_options = spawner.options_from_form(formdata)
    await spawner.load_user_options()
    await spawner.run_pre_spawn_hook()
    return spawner, await spawner.get_pod_manifest()


def gb(n: int) -> str:
    """KubeSpawner turns "4G" into bytes (2**30 each) in the pod's resources."""
    return str(n * 2**30)


@pytest.mark.parametrize(
    ("formdata", "image", "limits", "requests"),
    [
        pytest.param(
            {"profile": ["docker-stacks"]},
            "registry.example.org/notebooks/minimal-notebook:2026-11-01",
            {"cpu": "1.0", "memory": gb(4)},
            {"cpu": "0.5", "memory": gb(2)},
            id="docker-stacks-defaults",
        ),
        pytest.param(
            {
                "profile": ["docker-stacks"],
                "profile-option-docker-stacks--image": ["scipy"],
                "profile-option-docker-stacks--cpu": ["4"],
                "profile-option-docker-stacks--memory": ["16G"],
            },
            "registry.example.org/notebooks/scipy-notebook:2026-11-01",
            {"cpu": "4.0", "memory": gb(16)},
            {"cpu": "2.0", "memory": gb(8)},
            id="docker-stacks-scipy-4cpu-16g",
        ),
        pytest.param(
            {
                "profile": ["gpu-pytorch"],
                "profile-option-gpu-pytorch--cpu": ["2"],
                "profile-option-gpu-pytorch--memory": ["8G"],
            },
            "registry.example.org/notebooks/ngc-pytorch:25.10-py3",
            {"cpu": "2.0", "memory": gb(8), "nvidia.com/gpu": "1"},
            {"cpu": "1.0", "memory": gb(4)},
            id="gpu-2cpu-8g",
        ),
        pytest.param(
            {"profile": ["python"], "profile-option-python--memory": ["8G"]},
            "registry.example.org/notebooks/python:3.12-slim",
            {"cpu": "1.0", "memory": gb(8)},
            {"cpu": "0.5", "memory": gb(4)},
            id="python-8g",
        ),
    ],
)
def test_profile_options_put_the_choices_in_the_pod(
    kubeconfig, served_config, formdata, image, limits, requests
):
    values = load_values(CONFIGS / "z2jh-values.yaml")
    spawner, pod = asyncio.run(pod_from_form(values, served_config, formdata))
    container = pod.spec.containers[0]
    assert container.image == image
    assert {k: str(v) for k, v in container.resources.limits.items()} == limits
    assert {k: str(v) for k, v in container.resources.requests.items()} == requests
    # The choices land as KubeSpawner traits; nothing needs a custom options_form.
    assert "options_form" not in values["hub"]["config"].get("KubeSpawner", {})


def test_a_choice_the_profile_does_not_offer_is_refused(kubeconfig, served_config):
    values = load_values(CONFIGS / "z2jh-values.yaml")
    form = {"profile": ["python"], "profile-option-python--image": ["minimal"]}
    spawner, pod = asyncio.run(pod_from_form(values, served_config, form))
    assert pod.spec.containers[0].image == "registry.example.org/notebooks/python:3.12-slim"
    form = {"profile": ["docker-stacks"], "profile-option-docker-stacks--cpu": ["64"]}
    with pytest.raises((ValueError, KeyError), match="64"):  # the spawn fails
        asyncio.run(pod_from_form(values, served_config, form))


def test_the_pod_is_ready_only_when_nbinit_says_so(kubeconfig, served_config):
    values = load_values(CONFIGS / "z2jh-values.yaml")
    _, pod = asyncio.run(pod_from_form(values, served_config, {"profile": ["python"]}))
    probe = pod.spec.containers[0].readiness_probe
    probe = probe if isinstance(probe, dict) else probe.to_dict()
    assert probe["exec"] == {"command": ["nbinit", "ready"]}
    assert probe["periodSeconds"] <= 2


def test_named_servers_with_a_per_user_limit_and_a_hub_that_cancels_pending_spawns():
    values = load_values(CONFIGS / "z2jh-values.yaml")
    hub = values["hub"]
    assert hub["allowNamedServers"] is True
    assert 1 < hub["namedServerLimitPerUser"] <= 4
    # k8s-hub 4.x ships JupyterHub 5.x: >= 5.1 cancels a pending spawn on DELETE.
    assert hub["image"]["name"] == "quay.io/jupyterhub/k8s-hub"
    assert tuple(int(p) for p in hub["image"]["tag"].split(".")[:2]) >= (4, 0)


def test_gid_annotation_is_used_when_present(kubeconfig, served_config):
    values = load_values(CONFIGS / "z2jh-values.yaml")
    namespaces = {"alice": ({"nstype": "user"}, {"uid": "4321", "gid": "5000"})}
    _, _, env = asyncio.run(spawn_pod(values, served_config, namespaces, "python"))
    assert (env["NB_UID"], env["NB_GID"]) == ("4321", "5000")


@pytest.mark.parametrize(
    ("namespaces", "message"),
    [
        pytest.param(
            {}, "namespace alice does not exist: ask the cluster admins", id="no-namespace"
        ),
        pytest.param(
            {"alice": ({}, {"uid": "4321"})},
            "namespace alice is not a user namespace (no label nstype=user)",
            id="no-label",
        ),
        pytest.param(
            {"alice": ({"nstype": "team"}, {"uid": "4321"})},
            "namespace alice is not a user namespace (no label nstype=user)",
            id="other-label",
        ),
        pytest.param(
            {"alice": ({"nstype": "user"}, {})},
            "namespace alice has no annotation uid: the cluster admins must set it",
            id="no-uid",
        ),
        pytest.param(
            {"alice": ({"nstype": "user"}, {"uid": "0"})},
            "namespace alice annotation uid='0' is not a positive integer",
            id="uid-root",
        ),
        pytest.param(
            {"alice": ({"nstype": "user"}, {"uid": "01750"})},
            "namespace alice annotation uid='01750' is not a positive integer",
            id="uid-octal-looking",
        ),
        pytest.param(
            {"alice": ({"nstype": "user"}, {"uid": "4321", "gid": "-5"})},
            "namespace alice annotation gid='-5' is not a positive integer",
            id="gid-negative",
        ),
        pytest.param(
            {"alice": ({"nstype": "user"}, {"uid": "4294967295"})},
            "namespace alice annotation uid='4294967295' is not a positive integer",
            id="uid-overflow",
        ),
    ],
)
def test_a_namespace_that_cannot_say_who_the_user_is_stops_the_spawn(
    kubeconfig, served_config, namespaces, message
):
    values = load_values(CONFIGS / "z2jh-values.yaml")
    with pytest.raises(Exception) as raised:
        asyncio.run(spawn_pod(values, served_config, namespaces, "python"))
    assert type(raised.value).__name__ == "NbinitSpawnRefused"
    assert str(raised.value).startswith(message)


def test_poststart_values_run_the_hook_as_the_user_without_namespaces(kubeconfig, served_config):
    values = load_values(CONFIGS / "z2jh-values-poststart.yaml")
    values["singleuser"]["profileList"] = []
    from kubespawner import KubeSpawner

    async def build():
        c, _ = run_hub_code(values, served_config)
        spawner = KubeSpawner(_mock=True, config=c, user=FakeUser("alice"))
        spawner.api = FakeCoreV1Api({})
        await spawner.run_pre_spawn_hook()
        return spawner, await spawner.get_pod_manifest()

    spawner, pod = asyncio.run(build())
    assert spawner.api.reads == []  # no user namespaces: nothing to read
    container = pod.spec.containers[0]
    assert container.lifecycle.post_start == {"exec": {"command": ["nbinit", "poststart"]}}
    assert container.security_context["runAsUser"] == 1000
    env = {item.name: item.value for item in container.env}
    assert "NB_UID" not in env
    assert env["NBINIT_CONFIG_SHA256"] == hashlib.sha256(served_config.read_bytes()).hexdigest()


# -- serving the admin config: the hub's handler on loopback, fetched by nbinit ----------------


@pytest.fixture
def hub_serving(served_config):
    with hubcode.serve_config(served_config) as url:
        yield url, served_config


def fetch_served(url: str, pin: str) -> bytes:
    body, _ = fetch.fetch_config(
        url, token=None, sha256=pin, timeout=10, max_bytes=1 << 20, retries=0, log=Log()
    )
    return body


def test_hub_serves_the_config_and_nbinit_fetches_it_pinned(hub_serving):
    url, path = hub_serving
    pin = hashlib.sha256(path.read_bytes()).hexdigest()
    assert fetch_served(url, pin) == ADMIN_CONFIG.read_bytes()


def test_an_edited_configmap_is_served_at_once_and_the_old_pin_refuses_it(hub_serving):
    url, path = hub_serving
    old_pin = hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_bytes(path.read_bytes() + b"deadline: 15\n")  # kubectl apply; the kubelet syncs
    with pytest.raises(NbinitError) as raised:
        fetch_served(url, old_pin)
    assert "sha256" in str(raised.value)
    assert fetch_served(url, hashlib.sha256(path.read_bytes()).hexdigest()).endswith(
        b"deadline: 15\n"
    )


def test_no_configmap_is_a_404_nbinit_reports(hub_serving):
    url, path = hub_serving
    path.unlink()
    with pytest.raises(NbinitError) as raised:
        fetch_served(url, "")
    assert "404" in str(raised.value)
