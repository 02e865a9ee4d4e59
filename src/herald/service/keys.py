"""Key management: data-key rotation, re-encryption, KEK rotation, crypto-shredding.

- :func:`rotate_data_key` adds a tenant data-key version; new writes use it (running nodes
  switch within ``HERALD_KEY_CACHE_TTL``); old versions keep decrypting.
- :func:`reencrypt` moves a tenant's stored content to the current version in batches. Each
  batch swaps rows only where they are unchanged (compare-and-swap) and saves its cursor in
  the same transaction, so it is safe while the server serves traffic and resumes where an
  interrupted run stopped.
- :func:`rotate_kek` re-wraps every data key and signing key under the current KEK without
  touching a single message row.
- :func:`shred_tenant` destroys a tenant's data keys: its content becomes unrecoverable while
  the audit log (which holds only commitments) still verifies.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

from herald.crypto.aead import aad_for, peek_key_version
from herald.crypto.keyring import dek_context, wrap_new_data_key
from herald.crypto.providers import KekRouter
from herald.crypto.signing import PURPOSE_AUDIT, PURPOSE_TOKEN, PURPOSE_VAPID, signing_context
from herald.errors import BadRequest, Conflict, NotFound
from herald.observability.logging import get_logger
from herald.service import audit
from herald.service.runtime import Runtime, utcnow
from herald.storage.base import JobRecord, SigningKeyRecord, TenantKeyRecord

__all__ = [
    "REENCRYPT_JOB",
    "ReencryptResult",
    "data_key_status",
    "reencrypt",
    "rotate_and_reencrypt",
    "rotate_data_key",
    "rotate_kek",
    "shred_tenant",
    "stop_reencryptions",
]

REENCRYPT_JOB = "reencrypt"
_log = get_logger("herald.keys")


async def _audit(
    rt: Runtime,
    tenant: str | None,
    action: str,
    obj: str,
    actor: str = "operator",
    **details: object,
) -> None:
    await audit.record(rt, tenant=tenant, actor=actor, action=action, obj=obj, **details)


async def _live_tenant(rt: Runtime, tenant_id: str) -> list[TenantKeyRecord]:
    tenant = await rt.store.get_tenant(tenant_id)
    if tenant is None:
        raise NotFound(f"no tenant {tenant_id!r}")
    if tenant.shredded_at is not None:
        raise BadRequest(f"tenant {tenant_id} was shredded; it has no keys", slug="tenant-shredded")
    return await rt.store.tenant_keys(tenant_id)


async def rotate_data_key(rt: Runtime, tenant_id: str, *, actor: str = "operator") -> int:
    """Create the tenant's next data-key version; returns it."""
    keys = await _live_tenant(rt, tenant_id)
    version = (keys[0].version if keys else 0) + 1
    wrapped = await wrap_new_data_key(rt.provider, tenant_id, version, os.urandom)
    await rt.store.add_tenant_key(TenantKeyRecord(tenant_id, version, wrapped, utcnow()))
    rt.keyring.invalidate(tenant_id)
    await _audit(
        rt, tenant_id, "key.rotated", f"tenant-key:{tenant_id}:{version}", actor, version=version
    )
    return version


@dataclass(frozen=True, slots=True)
class ReencryptResult:
    """What a re-encryption run did."""

    target: int
    scanned: int
    changed: int
    total: int
    resumed_from: int


async def reencrypt(
    rt: Runtime,
    tenant_id: str,
    *,
    batch: int = 500,
    progress: Callable[[int, int], None] | None = None,
    stop_after: int | None = None,
    actor: str = "operator",
) -> ReencryptResult:
    """Move every sealed value of a tenant to its current data-key version.

    Args:
        rt: The runtime.
        tenant_id: The tenant.
        batch: Rows per transaction.
        progress: Called with ``(rows scanned so far, total rows)`` after each batch.
        stop_after: Stop after this many batches (tests use it to simulate an interruption).
        actor: Who the audit event of a finished run names.
    """
    keys = await _live_tenant(rt, tenant_id)
    target = keys[0].version
    total = await rt.store.count_messages(tenant_id)
    now = utcnow()
    job = await rt.store.get_job(REENCRYPT_JOB, tenant_id)
    if job is None or job.finished_at is not None or job.target != target:
        job = JobRecord(REENCRYPT_JOB, tenant_id, -1, target, now, now)
        await rt.store.save_job(job)
    resumed_from = job.cursor
    # Rows up to a resume point were handled by an earlier run: the progress starts there.
    done_before = total - await rt.store.count_messages(tenant_id, after_seq=resumed_from)
    scanned = changed = batches = 0
    rt.keyring.invalidate(tenant_id)
    sealer = await rt.keyring.sealer(tenant_id)
    while stop_after is None or batches < stop_after:
        page = await rt.store.messages_after(tenant_id, job.cursor, batch)
        if not page:
            break
        changes = []
        for record in page:
            if peek_key_version(record.content) < target:
                plain = await rt.keyring.open(tenant_id, record.id, "content", record.content)
                new = sealer.seal(plain, _aad(tenant_id, record.id))
                changes.append((record.id, record.content, new))
        job = JobRecord(REENCRYPT_JOB, tenant_id, page[-1].seq, target, job.started_at, utcnow())
        changed += await rt.store.replace_contents(tenant_id, changes, job)
        scanned += len(page)
        batches += 1
        if progress is not None:
            # Messages published meanwhile can push the count past the first total.
            progress(done_before + scanned, max(total, done_before + scanned))
    else:
        return ReencryptResult(target, scanned, changed, total, resumed_from)
    changed += await _reencrypt_app_keys(rt, tenant_id, target)
    finished = JobRecord(
        REENCRYPT_JOB, tenant_id, job.cursor, target, job.started_at, utcnow(), utcnow()
    )
    await rt.store.save_job(finished)
    await _audit(
        rt, tenant_id, "key.reencrypted", f"tenant-key:{tenant_id}:{target}", actor, rows=changed
    )
    return ReencryptResult(target, scanned, changed, total, resumed_from)


#: Re-encryptions started by :func:`rotate_and_reencrypt` on this node, by tenant.
_running: dict[str, asyncio.Task[ReencryptResult]] = {}


async def rotate_and_reencrypt(rt: Runtime, tenant_id: str, *, actor: str) -> int:
    """Rotate the data key and re-encrypt the tenant's content in the background.

    Follow the re-encryption with :func:`data_key_status` (it reads the job's saved cursor,
    so any node answers). One re-encryption per tenant at a time on a node.

    Raises:
        Conflict: a re-encryption of this tenant is still running here.
    """
    running = _running.get(tenant_id)
    if running is not None and not running.done():
        raise Conflict("a re-encryption of this tenant is still running; wait for it to finish")
    version = await rotate_data_key(rt, tenant_id, actor=actor)
    task = asyncio.create_task(reencrypt(rt, tenant_id, actor=actor))
    _running[tenant_id] = task
    task.add_done_callback(functools.partial(_finished, tenant_id))
    return version


async def stop_reencryptions() -> None:
    """Cancel this node's background re-encryptions (at shutdown).

    Each resumes from its saved cursor when ``herald keys reencrypt`` runs (or restarts with
    the next rotation).
    """
    running = list(_running.values())
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


def _finished(tenant_id: str, task: asyncio.Task[ReencryptResult]) -> None:
    if _running.get(tenant_id) is task:
        del _running[tenant_id]
    if not task.cancelled() and task.exception() is not None:
        # The job's cursor is saved per batch: the next rotation or `herald keys reencrypt`
        # resumes from there.
        _log.error("re-encryption stopped", tenant=tenant_id, error=type(task.exception()).__name__)


async def data_key_status(rt: Runtime, tenant_id: str) -> dict[str, object]:
    """A tenant's data-key versions and the progress of its latest re-encryption."""
    keys = await _live_tenant(rt, tenant_id)
    job = await rt.store.get_job(REENCRYPT_JOB, tenant_id)
    progress: dict[str, object] | None = None
    if job is not None:
        total = await rt.store.count_messages(tenant_id)
        left = await rt.store.count_messages(tenant_id, after_seq=job.cursor)
        task = _running.get(tenant_id)
        progress = {
            "target": job.target,
            "done": total - left,
            "total": total,
            "running": task is not None and not task.done(),
            "started_at": job.started_at.isoformat(),
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        }
    return {
        "tenant": tenant_id,
        "version": keys[0].version if keys else None,
        "versions": [{"version": k.version, "created_at": k.created_at.isoformat()} for k in keys],
        "reencryption": progress,
    }


def _aad(tenant_id: str, record_id: str) -> bytes:
    return aad_for(tenant_id=tenant_id, record_id=record_id, field="content")


async def _reencrypt_app_keys(rt: Runtime, tenant_id: str, target: int) -> int:
    changed = 0
    for app in await rt.store.list_apps(tenant_id):
        for key in await rt.store.list_app_keys(app.id):
            if key.secret and peek_key_version(key.secret) < target:
                plain = await rt.keyring.open(tenant_id, key.keyid, "hmac_secret", key.secret)
                new = await rt.keyring.seal(tenant_id, key.keyid, "hmac_secret", plain)
                changed += await rt.store.replace_app_key_secret(key.keyid, key.secret, new)
    return changed


async def rotate_kek(rt: Runtime, router: KekRouter) -> int:
    """Re-wrap every tenant data key and signing key under ``router``'s current KEK.

    Message rows are not touched. Returns how many wrapped keys changed.
    """
    target = router.kek_id
    tenant_changes: list[tuple[TenantKeyRecord, bytes]] = []
    signing_changes: list[tuple[SigningKeyRecord, bytes]] = []
    for tenant in await rt.store.list_tenants():
        for key in await rt.store.tenant_keys(tenant.id):
            if router.kek_of(key.wrapped_key) != target:
                context = dek_context(key.tenant_id, key.version)
                plain = await router.unwrap(key.wrapped_key, context)
                tenant_changes.append((key, await router.wrap(plain, context)))
    for purpose in (PURPOSE_TOKEN, PURPOSE_AUDIT, PURPOSE_VAPID):
        for skey in await rt.store.signing_keys(purpose):
            if router.kek_of(skey.wrapped_private_key) != target:
                context = signing_context(skey.kid, skey.purpose)
                plain = await router.unwrap(skey.wrapped_private_key, context)
                signing_changes.append((skey, await router.wrap(plain, context)))
    changed = await rt.store.rewrap_keys(tenant_changes, signing_changes)
    await _audit(rt, None, "kek.rotated", f"kek:{target}", rewrapped=changed)
    return changed


async def shred_tenant(rt: Runtime, tenant_id: str) -> None:
    """Destroy the tenant's data keys and disable its apps (irreversible)."""
    if not await rt.store.shred_tenant(tenant_id, utcnow()):
        raise NotFound(f"no tenant {tenant_id!r}")
    rt.keyring.invalidate(tenant_id)
    await _audit(rt, tenant_id, "tenant.shredded", f"tenant:{tenant_id}")
