"""Who the request-handling processes run as.

SageMaker starts the container as root, and root is what the supervisor needs (binding, reaping,
installing a model's requirements). The processes that parse request bytes do not: nginx's
worker and gunicorn's workers run as QA_WORKER_USER (`qa` in the image) when there is one and it
can read the whole model. Otherwise they stay root, with a warning that says why, so that a model
archive with owner-only files still serves. The entrypoint decides once; the decision reaches
gunicorn as a resolved setting (`Settings.workers_run_as`), not as QA_WORKER_USER. Multi Model
Server has no such setting: its workers keep the supervisor's user.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pwd
import stat
from pathlib import Path

log = logging.getLogger(__name__)

KEEP = ("", "root")  # QA_WORKER_USER values that keep the current user
MAX_CHECKED_FILES = 10_000  # a model is a few dozen files; past this, trust the rest


@dataclasses.dataclass(frozen=True)
class Identity:
    name: str
    uid: int
    gid: int


def lookup(user: str) -> Identity | None:
    """The user to switch to, if we are root and it exists (None: keep the current user)."""
    if os.geteuid() != 0 or user in KEEP:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    return Identity(entry.pw_name, entry.pw_uid, entry.pw_gid)


def worker_identity(user: str, model_dir: Path) -> Identity | None:
    """The user the workers should run as, or None to keep the current one (logged why)."""
    identity = lookup(user)
    if identity is None:
        if os.geteuid() == 0 and user not in KEEP:
            log.warning("QA_WORKER_USER=%s: no such user here; request-handling processes run as root", user)
        return None
    unreadable = first_unreadable(model_dir, identity)
    if unreadable is not None:
        log.warning(
            "%s is not readable by %s: request-handling processes run as root; make the model's files "
            "world-readable (chmod -R a+rX before packing model.tar.gz) to run them unprivileged",
            unreadable,
            user,
        )
        return None
    return identity


def first_unreadable(root: Path, identity: Identity) -> Path | None:
    """The first file or directory under `root` (itself included) that `identity` cannot read."""
    groups = set(os.getgrouplist(identity.name, identity.gid))
    checked = 0
    for directory, dirs, files in os.walk(root):
        for path in [Path(directory)] + [Path(directory) / name for name in files]:
            try:
                info = path.stat()
            except OSError:
                return path
            if not _may_read(info, identity.uid, groups):
                return path
            checked += 1
            if checked >= MAX_CHECKED_FILES:
                return None
        dirs.sort()
    return None


def _may_read(info: os.stat_result, uid: int, groups: set[int]) -> bool:
    need = stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH
    if stat.S_ISDIR(info.st_mode):  # listing and entering
        need = stat.S_IRUSR | stat.S_IXUSR, stat.S_IRGRP | stat.S_IXGRP, stat.S_IROTH | stat.S_IXOTH
    if info.st_uid == uid:
        bits = need[0]
    elif info.st_gid in groups:
        bits = need[1]
    else:
        bits = need[2]
    return info.st_mode & bits == bits


def hand_over(paths: list[Path], identity: Identity | None) -> None:
    """Create these directories and give them to the workers' user (they write there)."""
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
        if identity is not None:
            os.chown(path, identity.uid, identity.gid)
