"""Builds from source: upload a tarball, read or follow a build log; the template catalogue."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, StreamingResponse
from sqlalchemy import select

from api.deps import Deployer, SettingsDep, Viewer, read_off_loop
from api.schemas import DeploymentPublic
from api.services import apps as services
from api.services.apps import load_app, mutable
from api.streams import FollowSlot
from api.templates import Template, catalogue
from api.unit_of_work import MutationDep
from conveyor.builds import logs, sources
from conveyor.clients import oci_registry
from conveyor.clients.db.models import Build
from conveyor.domain.errors import RegistryRefused, RegistryUnreachable
from conveyor.domain.ids import new_id
from conveyor.domain.vocabulary import BUILD_FINISHED

router = APIRouter(tags=["builds"])
CHUNK = 1024 * 1024


@router.get("/templates", response_model=list[Template], summary="One-click app templates")
def list_templates(caller: Viewer) -> list[Template]:
    return list(catalogue().values())


@router.post(
    "/apps/{app_id}/build",
    status_code=202,
    response_model=DeploymentPublic,
    summary="Build from an uploaded source tarball and deploy it",
    description=(
        "Multipart form with the field `file`: a .tar or .tar.gz of the source. A Dockerfile at its root is used; "
        "without one the default recipe builds on the base image, runs build_command and starts the Procfile's web "
        "command. Archives with absolute paths, '..', links leading outside, link chains, oversized pax or GNU "
        "long-name headers, devices or duplicate names are refused (400 or 413, naming the entry); size and entry count "
        "are limited."
    ),
)
async def upload_build(
    app_id: str, m: MutationDep, caller: Deployer, file: Annotated[UploadFile, File(description="The source tarball")]
) -> Any:
    settings = m.settings

    def check_app(session) -> None:
        app = load_app(session, caller, app_id)
        mutable(app)
        if app.source_type != "upload":
            raise HTTPException(409, f"app {app.id} has source_type {app.source_type}; only upload apps take tarballs")

    await read_off_loop(settings, check_app)
    # The body is checked on this API's disk (a temporary file, gone when the
    # request ends), then streamed into the registry, where every worker reads it.
    target = await run_in_threadpool(_temporary_upload, settings)
    try:
        digest = hashlib.sha256()
        size = 0
        out = await run_in_threadpool(target.open, "wb")
        try:
            while chunk := await file.read(CHUNK):
                size += len(chunk)
                if size > settings.upload_max_bytes:
                    raise HTTPException(413, f"file: the upload is larger than {settings.upload_max_bytes} bytes")
                digest.update(chunk)
                await run_in_threadpool(out.write, chunk)
        finally:
            await run_in_threadpool(out.close)
        limits = sources.Limits(settings.upload_max_uncompressed_bytes, settings.upload_max_entries)
        try:
            await run_in_threadpool(sources.check_tarball, target, limits)
        except sources.UnsafeSource as exc:
            raise HTTPException(exc.status, f"file: {exc}") from exc
        try:
            source_ref = await oci_registry.push_source(
                settings, oci_registry.source_repository(caller.project_id), _read_chunks(target), f"sha256:{digest.hexdigest()}", size
            )
        except (RegistryUnreachable, RegistryRefused) as exc:
            raise HTTPException(503, f"the source could not be stored: {exc}") from exc

        return await m.identified_by(digest.hexdigest()).run(caller, services.deploy_upload, app_id, source_ref)
    finally:
        await run_in_threadpool(target.unlink, True)


def _temporary_upload(settings) -> Path:
    folder = settings.home / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{new_id('src')}.tar"


async def _read_chunks(path: Path) -> AsyncIterator[bytes]:
    source = await run_in_threadpool(path.open, "rb")
    try:
        while chunk := await run_in_threadpool(source.read, CHUNK):
            yield chunk
    finally:
        await run_in_threadpool(source.close)


@router.get(
    "/apps/{app_id}/build-log",
    response_class=PlainTextResponse,
    summary="The log of the latest build (or ?build_id=)",
    description="`follow=true` streams new lines while the build runs and ends when it does.",
)
async def build_log(
    app_id: str,
    settings: SettingsDep,
    caller: Viewer,
    build_id: Annotated[str | None, Query(description="bld_…; default: the latest build")] = None,
    follow: FollowSlot = False,
):
    def find(session) -> Build:
        app = load_app(session, caller, app_id)
        query = select(Build).where(Build.app_id == app.id)
        query = query.where(Build.id == build_id) if build_id else query.order_by(Build.created_at.desc())
        build = session.scalars(query).first()
        if build is None:
            raise HTTPException(404, "build not found for this app")
        return build

    build = await read_off_loop(settings, find)

    def since(session, after: int) -> tuple[bool, list[tuple[int, str]]]:
        """Whether the build has ended (read first, so no chunk written before the end is missed), and the chunks after `after`."""
        row = session.get(Build, build.id)
        done = row is None or row.status in BUILD_FINISHED
        return done, logs.chunks_after(session, build.id, after)

    if not follow:
        _, chunks = await read_off_loop(settings, since, -1)
        return PlainTextResponse("".join(text for _, text in chunks))

    async def stream():
        after = -1
        while True:
            done, chunks = await read_off_loop(settings, since, after)
            for seq, text in chunks:
                after = seq
                yield text.encode()
            if done:
                return
            await asyncio.sleep(logs.FLUSH_SECONDS)

    return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")
