"""The destination resolver (CockroachDB's backupdest.ResolveDest): where a backup goes. A full
takes a new subdir of the collection; an incremental finds the chain of the full that LATEST or
'subdir' names, takes the chain's tip as its parent, checks that its targets are the full's, and
claims both the position after the tip (the chain claim) and its own layer directory
(docs/FORMAT.md sections 1.1, 7.1 and 7.2)."""
from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass, field

from .. import collection
from ..errors import AlreadyExists, BackupExists, DataCorrupted, EngineError, NotFound, Unsupported
from ..format import layout
from ..format.envelope import open_bytes
from ..format.manifest import ChainLink, Manifest
from ..storage import ObjectStore, join_uri, read_all
from ..targets import resolve_backup_tables
from .checkpoint import ParentMark

__all__ = ["Destination", "resolve_destination", "check_backup", "refuse_unsupported", "claim",
           "claim_subdir", "holds_lock", "lock_body",
           "release_chain_claim", "TargetsMismatch", "BackupLocked"]

_log = logging.getLogger("pgkeep.backup")
_CLAIM_TRIES = 1000          # subdir names tried, 10 ms apart (docs/FORMAT.md section 1)
_CHAIN_TRIES = 10            # tips re-resolved when another layer was committed meanwhile
_CLAIM_GENERATIONS = 100     # stale chain claims superseded on one parent


class TargetsMismatch(EngineError):
    sqlstate = "22023"


class BackupLocked(EngineError):
    sqlstate = "58P02"


@dataclass
class Destination:
    """Where this run writes: a full (no parent) or the layer after `parent_path`."""
    full: str | None = None                 # the chain's full subdir (incrementals)
    parent: Manifest | None = None          # the layer this one extends
    parent_path: str | None = None
    chain: list[ChainLink] = field(default_factory=list)   # the new layer's `chain`

    @property
    def incremental(self) -> bool:
        return self.parent is not None


def lock_body(job_id: int, token: str) -> bytes:
    return json.dumps({"job_id": job_id, "token": token}, sort_keys=True).encode()


async def holds_lock(store: ObjectStore, subdir: str, body: bytes) -> bool | None:
    """True: the subdir's lock is ours; None: there is no lock; False: someone else's."""
    try:
        return await read_all(store, layout.lock_path(subdir)) == body
    except NotFound:
        return None


async def claim_subdir(store: ObjectStore, subdir: str, job_id: int, token: str) -> bool:
    """Create `subdir`'s lock naming the job and its token, never overwriting one (False: taken).
    A subdir that already holds a backup, or an older pgkeep's BACKUP-LOCK-<job_id>, is not
    used either (False; the lock just created is removed again, best effort)."""
    lock = layout.lock_path(subdir)
    try:
        await store.create(lock, lock_body(job_id, token))
    except AlreadyExists:
        return False
    async for info in store.list(subdir.strip("/") + "/", "/"):    # its own files, not data/
        name = info.path.rstrip("/").rsplit("/", 1)[-1]
        if name == "BACKUP_MANIFEST" or name.startswith(layout.LEGACY_LOCK_PREFIX):
            try:
                await store.delete(lock)    # ours: created just now
            except (EngineError, OSError) as e:
                _log.warning("could not delete %s: %s", join_uri(store.uri, lock), e)
            return False
    return True


# ---- resolving ------------------------------------------------------------------------------

def _targets_text(databases) -> str:
    out = []
    for d in databases:
        if d.selected is None:
            out.append(f"DATABASE {d.name}")
        else:
            names = {t.oid: f"{d.name}.{t.schema}.{t.name}" for t in d.tables}
            out += [names.get(oid, f"{d.name}.<relation {oid}>") for oid in sorted(d.selected)]
    return ", ".join(out)


def _plan_text(plan) -> str:
    return ", ".join(f"DATABASE {db}" if f is None else f"{len(f)} relation(s) of {db}" for db, f in plan)


def check_targets(plan, full: Manifest, full_path: str, uri: str) -> None:
    """An incremental's targets must be its full's (CockroachDB's rule): the same databases in
    the same order, whole, or the same relations by OID."""
    mine = [(db, None if f is None else sorted(f)) for db, f in plan]
    theirs = [(d.name, None if d.selected is None else sorted(d.selected)) for d in full.databases]
    if mine != theirs:
        raise TargetsMismatch(
            f"requested target(s) {_plan_text(plan)} do not match the target(s) of the backup in "
            f"{join_uri(uri, full_path)}: {_targets_text(full.databases)}",
            hint="an incremental backs up exactly what its full backup does; for other targets, "
                 "take a new full backup (BACKUP ... INTO the collection)")


async def _full_of(store: ObjectStore, spec) -> str:
    try:
        return await collection.resolve_subdir(store, spec.subdir, spec.latest)
    except NotFound:
        raise NotFound(f"no full backup in {store.uri} to append an incremental backup to",
                       hint="take a full backup first: BACKUP ... INTO the collection") from None


async def _chain_of(store: ObjectStore, spec) -> tuple[str, "collection.Chain"]:
    """The full an incremental of `spec` extends, and its chain up to the tip."""
    full = await _full_of(store, spec)
    try:
        return full, await collection.open_chain(store, full)
    except NotFound as e:
        raise NotFound(e.message, hint="take a full backup first: BACKUP ... INTO the collection, "
                                       "then BACKUP ... INTO LATEST IN it") from None


def refuse_unsupported(spec) -> None:
    if spec.scope == "cluster":
        raise Unsupported("full cluster backups are not supported by pgkeep yet",
                          hint="back up databases: BACKUP DATABASE d1, d2 INTO ...")


async def check_backup(spec, connector, store: ObjectStore) -> None:
    """Raise the error the backup of `spec` would raise before doing any work (its scope, its
    targets, an incremental's full and its targets); write nothing. The job checks again when
    it starts (an adopted job must still fail cleanly)."""
    refuse_unsupported(spec)
    plan = await resolve_backup_tables(spec, connector)
    if spec.latest or spec.subdir is not None:
        full, chain = await _chain_of(store, spec)
        check_targets(plan, chain.manifests[0], full, store.uri)


async def resolve_destination(run, plan) -> Destination:
    """A full's (nothing to resolve), or an incremental's: the tip of its full's chain (or the
    parent an earlier run of this job claimed), its targets checked against the full's."""
    spec, store = run.spec, run.store
    if not (spec.latest or spec.subdir is not None):
        return Destination()
    p = run.mark.parent
    if p is not None:          # resumed: the parent this job claimed after
        chain = await collection.open_chain(store, p.full)
        if p.path not in chain.paths:
            raise NotFound(f"the layer {p.path} this incremental backup extends is gone from {store.uri}")
        i = chain.paths.index(p.path)
        chain.paths, chain.manifests, chain.shas = chain.paths[:i + 1], chain.manifests[:i + 1], chain.shas[:i + 1]
        full = p.full
    else:
        full, chain = await _chain_of(store, spec)
    if plan is not None:
        check_targets(plan, chain.manifests[0], full, store.uri)
    return Destination(full, chain.tip, chain.tip_path, chain.link())


# ---- claiming -------------------------------------------------------------------------------

async def claim(run) -> Manifest | None:
    """Claim this run's directory: a full's subdir, or an incremental's chain position and layer
    directory. Returns the manifest an earlier run of this job already wrote there (then only
    its commit is left to finish)."""
    if not run.dest.incremental:
        return await _claim_dir(run, lambda i: layout.full_subdir(_start(run) + dt.timedelta(milliseconds=10 * i)))
    for _ in range(_CHAIN_TRIES):
        d = run.dest
        if run.mark.parent is None or run.mark.parent.id != d.parent.id:
            run.mark.parent = ParentMark(d.parent_path, d.parent.id, d.full, uuid.uuid4().hex)
            run.mark.subdir = ""
        start = d.parent.end_datetime
        own = await _claim_dir(run, lambda i: layout.layer_dir(
            d.full, _start(run) + dt.timedelta(milliseconds=10 * i), start))
        if await _claim_position(run):
            return own
        await _drop_own_lock(run)           # the chain moved on: take its new tip
        chain = await collection.open_chain(run.store, d.full)
        run.dest = Destination(d.full, chain.tip, chain.tip_path, chain.link())
    raise BackupExists(f"the backup chain in {run.store.uri} kept moving ({_CHAIN_TRIES} tries)")


def _start(run) -> dt.datetime:
    return dt.datetime.fromisoformat(run.mark.start)


async def _claim_dir(run, name_of) -> Manifest | None:
    """Make `run.mark.subdir` this job's: keep the directory an earlier run claimed (returning its
    manifest when that run got as far as writing it), else take the first free name. Each name
    is checkpointed before its lock is created, so a crash never leaves a lock the job does not
    know about."""
    m = run.mark
    if m.subdir and m.token:
        held = await holds_lock(run.store, m.subdir, lock_body(run.spec.job_id, m.token))
        if held:
            return await _own_manifest(run)
        if held is None and await claim_subdir(run.store, m.subdir, run.spec.job_id, m.token):
            return None
    run.saved = None       # chunks written into another directory are not this one's
    for i in range(_CLAIM_TRIES):
        m.subdir = name_of(i)
        m.token = uuid.uuid4().hex
        m.databases = {}
        await run.save()
        if await claim_subdir(run.store, m.subdir, run.spec.job_id, m.token):
            return None
    raise BackupExists(f"no free subdir in {run.store.uri} after {_CLAIM_TRIES} names",
                       hint="too many backups start at once into this collection")


async def _own_manifest(run) -> Manifest | None:
    """The manifest an earlier run of this job wrote into its directory, if any."""
    try:
        stored = await read_all(run.store, layout.manifest_path(run.mark.subdir))
    except NotFound:
        return None
    manifest = Manifest.from_bytes(open_bytes("BACKUP_MANIFEST", stored))
    if manifest.job_id != run.spec.job_id:
        raise BackupExists(f"{join_uri(run.store.uri, run.mark.subdir)} holds the backup of job "
                           f"{manifest.job_id}, not of job {run.spec.job_id}")
    return manifest


async def _drop_own_lock(run) -> None:
    """Give back a layer directory claimed for a chain position that another job took."""
    body = lock_body(run.spec.job_id, run.mark.token)
    if await holds_lock(run.store, run.mark.subdir, body):
        await run.store.delete(layout.lock_path(run.mark.subdir))
    run.mark.subdir, run.mark.token = "", ""


def _claim_body(run) -> bytes:
    return json.dumps({"job_id": run.spec.job_id, "token": run.mark.parent.token,
                       "layer": run.mark.subdir}, sort_keys=True).encode()


def _claim_name(p: ParentMark, generation: int) -> str:
    """The chain claim on extending the parent `p`, and after `generation` stale ones:
    `claims/<parent id>`, then `claims/<parent id>.1`, `.2`, ... (FORMAT.md 7.2)."""
    path = layout.claim_path(p.full, p.id)
    return f"{path}.{generation}" if generation else path


def _is_ours(run, other: dict) -> bool:
    return other.get("job_id") == run.spec.job_id and other.get("token") == run.mark.parent.token


async def _read_claim(run, path: str) -> dict | None:
    """The claim at `path` (None: there is none)."""
    try:
        return json.loads(await read_all(run.store, path))
    except NotFound:
        return None
    except ValueError:
        raise BackupLocked(f"{join_uri(run.store.uri, path)} is damaged") from None


async def _claim_position(run) -> bool:
    """Create the chain claim on extending the parent (FORMAT.md 7.2). True: ours. False: a layer
    of another job was committed after the parent (resolve the tip again). Raises BackupLocked
    while another live job holds it. A claim whose job ended without committing its layer is
    stale: it is never deleted by another job (no store deletes conditionally, so a job deleting
    what it read as stale could delete the claim a third job created meanwhile: two jobs would
    extend one parent), it is superseded by the claim's next generation, which one job only
    creates."""
    p = run.mark.parent
    for generation in range(_CLAIM_GENERATIONS):
        path = _claim_name(p, generation)
        for _ in range(3):     # its job's cleanup may delete it between our create and read
            try:
                await run.store.create(path, _claim_body(run))
                return True
            except AlreadyExists:
                pass
            other = await _read_claim(run, path)
            if other is not None:
                break
        else:
            raise BackupLocked(f"could not claim the layer after {p.path} in {run.store.uri}")
        if _is_ours(run, other):
            return True
        try:
            await collection.read_layer(run.store, other.get("layer", ""))
            return False                     # committed: the chain moved on
        except (NotFound, DataCorrupted, Unsupported):
            pass     # no committed layer (a store that fails to answer is no proof: it raises)
        if await _job_live(run, other.get("job_id")):
            raise BackupLocked(
                f"{join_uri(run.store.uri, layout.incrementals_of(p.full))} already contains a BACKUP-LOCK "
                f"file for the layer after {p.path} written by job {other.get('job_id')} "
                "(is another operation already in progress?)",
                hint="wait for that backup job to finish (SHOW JOBS), or cancel it")
        _log.info("backup job %d: the chain claim of ended job %s on %s is stale; taking the next one",
                  run.spec.job_id, other.get("job_id"), p.path)
        run.reach("backup.stale_claim")
    raise BackupLocked(f"{_CLAIM_GENERATIONS} stale chain claims on the layer after {p.path} in "
                       f"{run.store.uri}", hint="back up into a new full backup (BACKUP ... INTO the collection)")


async def _job_live(run, job_id) -> bool:
    """Whether the job that wrote a claim may still write (unknown counts as live)."""
    reg = getattr(run.job, "registry", None)
    if reg is None or not isinstance(job_id, int):
        return True
    try:
        job = await reg.store.get(job_id)
    except Exception as e:  # noqa: BLE001 - a job row no longer kept means the job ended
        return type(e).__name__ != "UndefinedJob"
    return job.status not in ("succeeded", "failed", "canceled")


async def release_chain_claim(run) -> list[str]:
    """After a failure or cancel before the commit point: delete this job's chain claim, so the
    next incremental extends the same parent. Returns refusals (messages). The generations of a
    claim are contiguous (one is created only while all before it exist, stale, and a stale
    claim's job never deletes it again), so ours, if any, comes before the first absent one."""
    p = run.mark.parent
    if p is None:
        return []
    for generation in range(_CLAIM_GENERATIONS):
        path = _claim_name(p, generation)
        try:
            other = await _read_claim(run, path)
        except BackupLocked:      # damaged: not ours
            continue
        except (EngineError, OSError) as e:
            return [f"could not read {join_uri(run.store.uri, path)}: {getattr(e, 'message', e)}"]
        if other is None:
            return []
        if _is_ours(run, other):
            try:
                await run.store.delete(path)
            except (EngineError, OSError) as e:
                return [f"could not delete {join_uri(run.store.uri, path)}: {getattr(e, 'message', e)}"]
            return []
    return []
