"""Jobs over HTTP: submit a folder under the configured roots or a list of image URLs, follow, cancel.

    POST   /v1/jobs               {"folder": "/data/batch7"} or {"urls": ["https://…", …]} (+ options)
    GET    /v1/jobs/{id}          progress (as `producer status --json`)
    GET    /v1/jobs/{id}/records  one record per image (as `producer results --format json`)
    DELETE /v1/jobs/{id}          cancel (as `producer cancel`)

Submission runs in a background thread (producers.submit.Submitter, the CLI's own path), so the
POST answers at once with the job id. URL jobs are downloaded first (producers.serve.downloads);
a URL that cannot be fetched becomes that image's error record and the job goes on.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Request

from app.heartbeat import live_models
from app.store import JobStore
from config.settings import Settings
from producers.api import Job
from producers.serve.downloads import download_all
from producers.serve.errors import ApiError
from producers.serve.job_request import JobRequest
from producers.submit import Submitter, new_job_id
from workers.engine import TEST_ENGINE_ID, engine_model_id

log = logging.getLogger(__name__)
router = APIRouter()


class JobRunner:
    """Background submissions of this service; remembers jobs still downloading (not yet in Redis)."""

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="vlmq-job")
        self.preparing: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def job_settings(self, req: JobRequest) -> Settings:
        model = req.model or engine_model_id(self.settings)
        if model == TEST_ENGINE_ID:
            overrides: dict[str, Any] = {"engine": {"backend": "test"}}
        else:
            overrides = {"engine": {"backend": "vllm", "model": model}}
        workers = live_models(self.store.r).get(model)
        if not workers:
            raise ApiError(404, f"no live worker serves model {model!r}", "model", "model_not_found")
        overrides["queues"] = sorted({q for w in workers for q in w["queues"]})
        return self.settings.with_overrides(
            batch_size=req.batch_size,
            use_cache=req.use_cache,
            stages=req.stages,
            **overrides,
            conditions={
                "score_threshold": req.score_threshold,
                "categories_to_score": req.categories_to_score,
                "categories_to_summarize": req.categories_to_summarize,
            },
        )

    def folder_under_roots(self, folder: str) -> Path:
        roots = [Path(r).expanduser().resolve() for r in self.settings.serve.job_roots]
        if not roots:
            raise ApiError(
                403,
                "folder jobs are disabled: no job_roots configured (VLMQ_SERVE__JOB_ROOTS)",
                "folder",
                "folder_not_allowed",
            )
        path = Path(folder).expanduser().resolve()  # symlinks and .. resolved before the check
        if not any(path == r or r in path.parents for r in roots):
            raise ApiError(
                403, f"folder {folder!r} is outside the configured job roots", "folder", "folder_not_allowed"
            )
        if not path.is_dir():
            raise ApiError(400, f"folder {folder!r} does not exist or is not a folder", "folder", "folder_not_found")
        return path

    def start(self, req: JobRequest) -> dict[str, Any]:
        if (req.folder is None) == (req.urls is None):
            raise ApiError(400, "give exactly one of 'folder' and 'urls'", "folder", "invalid_value")
        settings = self.job_settings(req)
        job_id = new_job_id()
        if req.folder is not None:
            folder = self.folder_under_roots(req.folder)
            self.pool.submit(self._submit, job_id, settings, [folder], req.recursive, [], None)
            return {"id": job_id, "object": "job", "status": "submitting", "source": str(folder)}
        if len(req.urls) > self.settings.serve.max_job_urls:
            raise ApiError(
                400,
                f"{len(req.urls)} URLs, over the limit of {self.settings.serve.max_job_urls}",
                "urls",
                "too_many_urls",
            )
        with self.lock:
            self.preparing[job_id] = {
                "id": job_id,
                "object": "job",
                "status": "downloading",
                "total": len(req.urls),
                "downloaded": 0,
            }
        self.pool.submit(self._download_then_submit, job_id, settings, list(req.urls))
        return {**self.preparing[job_id]}

    def _download_then_submit(self, job_id: str, settings: Settings, urls: list[str]) -> None:
        base = self.settings.serve.download_dir
        try:
            folder, failures, names = download_all(
                job_id,
                urls,
                self.settings.serve,
                settings.images.extensions,
                base,
                on_one=lambda: self._bump(job_id),
                cancelled=lambda: self._status(job_id) == "cancelled",
            )
        except Exception as exc:
            log.exception("URL job download failed", extra={"job_id": job_id})
            self._set(job_id, status="failed", error=f"{type(exc).__name__}: {exc}")
            return
        if self._status(job_id) == "cancelled":
            shutil.rmtree(folder, ignore_errors=True)
            return
        self._submit(job_id, settings, [folder], False, failures, names, cleanup=folder)

    def _submit(
        self,
        job_id: str,
        settings: Settings,
        roots: list[Path],
        recursive: bool,
        failures: list,
        names: dict[str, str] | None,
        cleanup: Path | None = None,
    ) -> None:
        try:
            if names:  # record name → URL, before the job exists so no reader ever misses it
                self.store.set_fields(job_id, sources=json.dumps(names))
            submitter = Submitter(settings, store=self.store)
            submitter.submit(roots, recursive=recursive, queues=settings.queues, job_id=job_id, failures=failures)
        except Exception as exc:
            log.exception("job submission failed", extra={"job_id": job_id})
            self._set(job_id, status="failed", error=f"{type(exc).__name__}: {exc}")
            return
        finally:
            if cleanup is not None:  # every image is in Redis now (or recorded as failed)
                shutil.rmtree(cleanup, ignore_errors=True)
        with self.lock:
            self.preparing.pop(job_id, None)

    def _bump(self, job_id: str) -> None:
        with self.lock:
            if job_id in self.preparing:
                self.preparing[job_id]["downloaded"] += 1

    def _set(self, job_id: str, **fields: Any) -> None:
        with self.lock:
            self.preparing.setdefault(job_id, {"id": job_id, "object": "job"}).update(fields)

    def _status(self, job_id: str) -> str | None:
        with self.lock:
            return self.preparing.get(job_id, {}).get("status")

    def progress(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            early = dict(self.preparing.get(job_id, {}))
        if self.store.load_spec(job_id) is None:
            if early:
                return early
            raise ApiError(404, f"no job {job_id}", "job_id", "job_not_found")
        job = Job(job_id, self.settings, store=self.store)
        return {
            "id": job_id,
            "object": "job",
            **job.progress().model_dump(mode="json"),
            "stages": job.stage_counts(),
            **({"error": early["error"]} if early.get("error") else {}),
        }

    def cancel(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            downloading = job_id in self.preparing
            if downloading:
                self.preparing[job_id]["status"] = "cancelled"
        if self.store.load_spec(job_id) is None:
            if downloading:
                return {"id": job_id, "object": "job", "status": "cancelled", "removed": 0}
            raise ApiError(404, f"no job {job_id}", "job_id", "job_not_found")
        removed = Job(job_id, self.settings, store=self.store).cancel()
        return {"id": job_id, "object": "job", "status": "cancelled", "removed": removed}


@router.post("/v1/jobs", status_code=202)
async def create_job(body: JobRequest, request: Request):
    return await to_thread.run_sync(request.app.state.jobs.start, body)


@router.get("/v1/jobs/{job_id}")
async def job_progress(job_id: str, request: Request):
    return await to_thread.run_sync(request.app.state.jobs.progress, job_id)


@router.get("/v1/jobs/{job_id}/records")
def job_records(job_id: str, request: Request, offset: int = 0, limit: int | None = None):
    runner: JobRunner = request.app.state.jobs
    if runner.store.load_spec(job_id) is None:
        raise ApiError(404, f"no job {job_id} (or it is still downloading)", "job_id", "job_not_found")
    job = Job(job_id, runner.settings, store=runner.store)
    start = max(0, offset)
    page = list(islice(job.records(), start, None if limit is None else start + max(0, limit)))
    sources = runner.store.get_field(job_id, "sources")
    return {
        "object": "list",
        "job_id": job_id,
        "total": job.record_count(),
        "data": [r.model_dump(mode="json") for r in page],
        **({"sources": json.loads(sources)} if sources else {}),
    }


@router.delete("/v1/jobs/{job_id}")
async def cancel_job(job_id: str, request: Request):
    return await to_thread.run_sync(request.app.state.jobs.cancel, job_id)
