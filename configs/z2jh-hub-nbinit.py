# nbinit on zero-to-jupyterhub: the hub side. This file is `hub.extraConfig.nbinit` in
# configs/z2jh-values.yaml (a test keeps the two identical); it runs inside the chart's
# jupyterhub_config.py, where `c` and `get_config` are already defined.
#
# 1. Each user's server runs in that user's own namespace, which the cluster's admins create
#    with the label nstype=user and the annotation uid=<the user's UID> (optionally gid=).
#    Before each spawn the hub reads that namespace and hands the ids to nbinit as
#    NB_UID/NB_GID; a namespace without the label or a valid uid stops the spawn with the
#    reason, so a username like "kube-system" can never place a server anywhere else.
# 2. The hub serves nbinit's admin config, a ConfigMap mounted at custom.nbinit.configPath,
#    at /hub/nbinit/config.yaml on its internal port (8081, which user pods may reach),
#    and pins each spawn to the sha256 of what it serves at that moment
#    (NBINIT_CONFIG_SHA256): admins change the config with `kubectl apply`, no Helm
#    upgrade, and a pod never applies bytes the hub did not serve.
# The hub's ServiceAccount needs configs/z2jh-rbac.yaml for the namespaces.
import asyncio
import hashlib
import re

from kubernetes_asyncio.client.rest import ApiException
from tornado import web

NBINIT_NAMESPACE_LABEL = ("nstype", "user")
NBINIT_ID_PATTERN = re.compile(r"^[1-9][0-9]{0,9}$")
NBINIT_ID_MAX = 2147483646  # 2**31 - 2: the kernel's (uid_t)-1 and the overflow id are not ids
NBINIT_CONFIG_PATH = get_config("custom.nbinit.configPath", "/usr/local/etc/nbinit/config.yaml")  # noqa: F821


class NbinitSpawnRefused(Exception):
    """The user's namespace cannot say who the user is: the spawn stops with this message."""


def nbinit_ids_from_namespace(name, labels, annotations):
    """(uid, gid) from a user namespace's label and annotations, or NbinitSpawnRefused."""
    key, value = NBINIT_NAMESPACE_LABEL
    if (labels or {}).get(key) != value:
        raise NbinitSpawnRefused(
            f"namespace {name} is not a user namespace (no label {key}={value}): "
            "ask the cluster admins to create it for you"
        )
    ids = []
    for annotation, default in (("uid", None), ("gid", "uid")):
        raw = (annotations or {}).get(annotation)
        if raw is None and default:
            ids.append(ids[0])
            continue
        if raw is None:
            raise NbinitSpawnRefused(
                f"namespace {name} has no annotation uid: the cluster admins must set it "
                "(kubectl annotate namespace NAME uid=UID)"
            )
        if not NBINIT_ID_PATTERN.match(str(raw)) or int(raw) > NBINIT_ID_MAX:
            raise NbinitSpawnRefused(
                f"namespace {name} annotation {annotation}={str(raw)[:20]!r} is not a "
                f"positive integer up to {NBINIT_ID_MAX}: the cluster admins must fix it"
            )
        ids.append(int(raw))
    return ids[0], ids[1]


async def nbinit_read_namespace(spawner):
    """The user namespace's labels and annotations, from the Kubernetes API."""
    try:
        namespace = await asyncio.wait_for(
            spawner.api.read_namespace(spawner.namespace), spawner.k8s_api_request_timeout
        )
    except ApiException as exc:
        if exc.status == 404:
            raise NbinitSpawnRefused(
                f"namespace {spawner.namespace} does not exist: ask the cluster admins to "
                "create it for you"
            ) from None
        raise
    return namespace.metadata.labels or {}, namespace.metadata.annotations or {}


def nbinit_served_config():
    """The admin config the hub serves now, or None when no ConfigMap is mounted."""
    try:
        with open(NBINIT_CONFIG_PATH, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


async def nbinit_pre_spawn_hook(spawner):
    environment = dict(spawner.environment)
    if spawner.enable_user_namespaces:  # postStart mode (no accounts) runs without them
        labels, annotations = await nbinit_read_namespace(spawner)
        uid, gid = nbinit_ids_from_namespace(spawner.namespace, labels, annotations)
        environment.update(NB_UID=str(uid), NB_GID=str(gid))
        spawner.log.info(f"nbinit: {spawner.user.name} runs as uid {uid} gid {gid}")
    served = nbinit_served_config()
    if served is not None:
        environment["NBINIT_CONFIG_SHA256"] = hashlib.sha256(served).hexdigest()
    spawner.environment = environment


class NbinitConfigHandler(web.RequestHandler):
    """GET /hub/nbinit/config.yaml: the mounted admin config, read fresh on every request."""

    def get(self):
        served = nbinit_served_config()
        if served is None:
            raise web.HTTPError(404, "no nbinit admin config is mounted on the hub")
        self.set_header("Content-Type", "application/yaml; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Nbinit-Config-Sha256", hashlib.sha256(served).hexdigest())
        self.write(served)


c.KubeSpawner.pre_spawn_hook = nbinit_pre_spawn_hook  # noqa: F821
c.JupyterHub.extra_handlers.append((r"/nbinit/config.yaml", NbinitConfigHandler))  # noqa: F821
