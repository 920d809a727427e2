"""The commit (manifest, checksum: the commit point, then a full's LATEST marker; each created,
never overwritten: docs/FORMAT.md section 4.1) and the cleanup of a run that does not commit
(only objects of the job's own directory, which its lock makes its own: section 4.3)."""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging

from ..errors import AlreadyExists, BackupExists, DataCorrupted, EngineError
from ..format import layout
from ..format.manifest import Manifest
from ..storage import ObjectStore, join_uri, read_all
from .dest import release_chain_claim

__all__ = ["commit", "drop_leftovers", "abandon", "discard_debris", "still_ours", "report_refused"]

_log = logging.getLogger("pgkeep.backup")


async def _create_once(store: ObjectStore, path: str, data: bytes) -> None:
    """Create `path`; an object already there is fine only if it holds exactly `data` (an
    earlier run of this job wrote it before a crash)."""
    try:
        await store.create(path, data)
    except AlreadyExists:
        if await read_all(store, path) != data:
            raise DataCorrupted(f"{join_uri(store.uri, path)} exists with other content",
                                hint="another writer changed this backup's subdir") from None


async def _write_latest(store: ObjectStore, end_time: dt.datetime, subdir: str) -> None:
    """A LATEST marker naming `subdir`; when another backup's marker has the same name (same
    end time to the microsecond) the next nanosecond's name is taken."""
    body = subdir.encode()
    for ns in range(1000):
        path = layout.latest_marker(end_time, ns)
        try:
            await store.create(path, body)
            return
        except AlreadyExists:
            if await read_all(store, path) == body:
                return
    raise BackupExists(f"no free LATEST marker name in {store.uri} for {end_time.isoformat()}")


async def commit(run, manifest: Manifest, stored: bytes) -> None:
    store, subdir = run.store, run.mark.subdir
    await _create_once(store, layout.manifest_path(subdir), stored)
    run.written.append(layout.manifest_path(subdir))
    run.reach("backup.after_manifest")
    await _create_once(store, layout.checksum_path(subdir), hashlib.sha256(stored).hexdigest().encode())
    run.committed = True
    run.reach("backup.after_checksum")
    if manifest.backup_type == "full":        # LATEST names fulls (FORMAT.md 7.1)
        await _write_latest(store, manifest.end_datetime, subdir)
    run.reach("backup.after_latest")


def _refused(run, msg: str) -> None:
    _log.warning("backup job %d: %s", run.spec.job_id, msg)
    run.refused.append(msg)
    run.job.begin(f"leftovers not deleted ({len(run.refused)}): {run.refused[0]}")


async def _delete_paths(run, paths: list[str]) -> None:
    """Best effort; a delete the store refuses is logged and reported in the job's status,
    never fatal."""
    for p in dict.fromkeys(paths):
        try:
            await asyncio.shield(run.store.delete(p))
        except asyncio.CancelledError:
            pass
        except (EngineError, OSError) as e:
            _refused(run, f"could not delete {join_uri(run.store.uri, p)}: {getattr(e, 'message', e)}")


async def discard_debris(run) -> None:
    """Remove the store's debris of writes that never finished in this job's directory
    (temporary files, unfinished multipart uploads of a run killed mid-file; FORMAT.md 4.3).
    Best effort as _delete_paths: a refusal is logged and reported, never fatal."""
    try:
        n = await asyncio.shield(run.store.discard_incomplete(run.mark.subdir.strip("/") + "/"))
    except asyncio.CancelledError:
        return
    except (EngineError, OSError) as e:
        _refused(run, f"could not discard unfinished writes in {join_uri(run.store.uri, run.mark.subdir)}: "
                      f"{getattr(e, 'message', e)}")
        return
    if n:
        _log.info("backup job %d: discarded %d unfinished writes in %s", run.spec.job_id, n,
                  run.mark.subdir)


async def still_ours(run) -> bool | None:
    """Does this process still hold the job's lease (None: the catalog cannot say)? A process
    that lost it (its heartbeats stalled past the lease) must neither commit nor clean up:
    another process runs the job in the same directory now. Asking renews the lease."""
    if run.job.stop == "release":
        return False
    reg = run.job.registry
    if reg is None:
        return True
    try:
        held = await reg.store.heartbeat(reg.coordinator, [run.job.job_id], reg.lease)
    except Exception:  # noqa: BLE001 - the catalog unreachable (an upstream restart)
        return None
    return run.job.job_id in held


async def holds_lease(run) -> bool:
    """Does this process still hold the job's lease, even while it is releasing it (a
    shutdown)? False when the catalog cannot say."""
    reg = run.job.registry
    if reg is None:
        return True
    try:
        return run.job.job_id in await reg.store.heartbeat(reg.coordinator, [run.job.job_id], reg.lease)
    except Exception:  # noqa: BLE001 - the catalog unreachable
        return False


async def _dir_objects(run) -> dict[str, int]:
    """path -> size of every object in this job's directory."""
    return {info.path: info.size async for info in run.store.list(run.mark.subdir.strip("/") + "/")}


async def drop_leftovers(run, manifest: Manifest) -> None:
    """Before the commit: every file of this directory the manifest names must be there with
    its size (a chunk kept from an earlier run included), else no commit; then delete what
    earlier runs of this job left here that the manifest does not name (chunks redone with
    fewer parts, files of a run killed mid-chunk). Files of earlier layers are not its own."""
    found = await _dir_objects(run)
    prefix = run.mark.subdir.strip("/") + "/"
    own = [f for f in manifest.all_files() if f.path.startswith(prefix)]
    wrong = [f.path for f in own if found.get(f.path) != f.size]
    if wrong:
        raise DataCorrupted(f"backup files vanished or changed before the commit: {', '.join(wrong[:5])}",
                            hint="run the backup again")
    keep = {f.path for f in own} | {layout.lock_path(run.mark.subdir)}
    await _delete_paths(run, [p for p in found if p not in keep])


async def abandon(run) -> None:
    """After a failure or cancel before the commit point: delete everything in this job's
    directory, the lock last (nothing else ever writes there while it exists), then an
    incremental's chain claim. When the store refused a delete the lock stays, so no other job
    ever claims a directory holding our files."""
    lock = layout.lock_path(run.mark.subdir)
    try:
        found = list(await _dir_objects(run))
    except (EngineError, OSError):
        found = []
    prefix = run.mark.subdir.strip("/") + "/"
    paths = [p for p in found + run.written + (run.saved.files() if run.saved else [])
             + run.mark.files() if p != lock and p.startswith(prefix)]
    await _delete_paths(run, paths)
    await discard_debris(run)
    if not run.refused:
        await _delete_paths(run, [lock])
    if not run.refused:
        for msg in await release_chain_claim(run):
            _refused(run, msg)


async def drop_unfinished_claim(run) -> None:
    """A claim that failed midway (a store error after the lock's create was sent) may still
    have left our lock: delete it if it is ours and the directory holds nothing else, best
    effort; likewise an incremental's chain claim."""
    from .dest import holds_lock, lock_body
    if not run.mark.token or not run.mark.subdir:
        return
    try:
        if await holds_lock(run.store, run.mark.subdir, lock_body(run.spec.job_id, run.mark.token)):
            lock = layout.lock_path(run.mark.subdir)
            if [p for p in await _dir_objects(run) if p != lock]:
                return
            await _delete_paths(run, [lock])
        await release_chain_claim(run)
    except (EngineError, OSError):
        pass


def report_refused(run, e: BaseException) -> None:
    """Refused deletes go into the detail of the job's error."""
    if run.refused:
        try:
            e.detail = "\n".join(filter(None, [getattr(e, "detail", None), *run.refused]))
        except AttributeError:
            pass
