"""Which image references a worker trusts: only those its own job's producer issued.

A message is input like any other: anyone holding the Redis password can publish one. A worker
therefore reads (and later deletes) only
  - the Redis blob key `vlmq:blob:<job_id>:<sha256>` of the batch's own job and the item's own hash;
  - the file `<shared_dir>/<job_id>/<sha256>.jpg` on its configured shared folder, opened one path
    component at a time relative to the folder's descriptor with O_NOFOLLOW, then checked with
    fstat on what was opened (a regular file, one link, not over the size limit).
Anything else is refused without being opened; the item gets an error record.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from app.store import JobStore

SHA256 = re.compile(r"[0-9a-f]{64}")
PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")  # one path component, never '.' or '..'


class RefusedReference(Exception):
    """An image reference this worker did not issue, or one that changed after it was issued."""


class MissingFile(RefusedReference):
    """This job's own file, already gone (deleted by a finished attempt, or never written)."""


def _shared_file(ref_blob: str, job_id: str, sha256: str, shared_dir: Path | None) -> tuple[str, str, str]:
    """(shared folder, job folder name, file name) of a path reference, or RefusedReference."""
    if shared_dir is None:
        raise RefusedReference("a file path, but this worker has no shared folder configured")
    if ".." in ref_blob.replace("\\", "/").split("/"):
        raise RefusedReference("path contains '..'")
    folder = os.path.abspath(shared_dir)
    expected = os.path.join(folder, job_id, f"{sha256}.jpg")
    if os.path.abspath(ref_blob) != expected:
        raise RefusedReference(f"path is not this job's prepared file under the shared folder {folder}")
    return folder, job_id, f"{sha256}.jpg"


def check(blob: str, sha256: str, job_id: str, shared_dir: Path | None) -> None:
    """Raise RefusedReference unless `blob` is what this job's producer would have issued."""
    if not SHA256.fullmatch(sha256):
        raise RefusedReference("sha256 is not 64 lowercase hex digits")
    if not PLAIN_NAME.fullmatch(job_id):
        raise RefusedReference("job id is not a plain name")
    if JobStore.is_blob_key(blob):
        if blob != JobStore.blob_key(job_id, sha256):
            raise RefusedReference("blob key of another job or another image")
        return
    _shared_file(blob, job_id, sha256, shared_dir)


def _open_job_folder(folder: str, job_id: str) -> int:
    # The configured folder itself may be a symlink (a mount point); nothing below it may be.
    top = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return os.open(job_id, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=top)
    finally:
        os.close(top)


def _refusal(exc: OSError) -> RefusedReference:
    if exc.errno == errno.ENOENT:
        return MissingFile(f"shared file missing: {exc.strerror}")
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return RefusedReference("a symlink on the shared folder (not followed)")
    return RefusedReference(f"cannot open the shared file: {exc.strerror or exc}")


def read_shared(blob: str, sha256: str, job_id: str, shared_dir: Path | None, max_bytes: int) -> bytes:
    """The bytes of this job's prepared file; what was opened is checked, not what was named."""
    check(blob, sha256, job_id, shared_dir)
    folder, job, name = _shared_file(blob, job_id, sha256, shared_dir)
    try:
        dir_fd = _open_job_folder(folder, job)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise _refusal(exc) from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise RefusedReference("not a regular file")
        if st.st_nlink != 1:  # a hard link could name a file the job never wrote
            raise RefusedReference(f"file has {st.st_nlink} links (a hard link is refused)")
        if st.st_size > max_bytes:
            raise RefusedReference(f"file is {st.st_size} bytes, over the limit of {max_bytes}")
        return fh.read(st.st_size + 1)


def probe_shared(blob: str, sha256: str, job_id: str, shared_dir: Path | None) -> None:
    """Open and check the shared file without reading it (RefusedReference if it fails)."""
    check(blob, sha256, job_id, shared_dir)
    folder, job, name = _shared_file(blob, job_id, sha256, shared_dir)
    try:
        dir_fd = _open_job_folder(folder, job)
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise _refusal(exc) from exc
    if stat.S_ISLNK(st.st_mode):
        raise RefusedReference("a symlink on the shared folder (not followed)")
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        raise RefusedReference("not a regular file with a single link")


def remove_shared(blob: str, sha256: str, job_id: str, shared_dir: Path | None) -> None:
    """Delete this job's prepared file (a refused reference is left alone by the caller)."""
    folder, job, name = _shared_file(blob, job_id, sha256, shared_dir)
    try:
        dir_fd = _open_job_folder(folder, job)
    except OSError:
        return
    try:
        os.unlink(name, dir_fd=dir_fd)  # unlink never follows: a link is removed, not its target
    except FileNotFoundError:
        pass
    finally:
        os.close(dir_fd)


def refusal(blob: str, sha256: str, job_id: str, shared_dir: Path | None) -> str | None:
    """Why a reference is refused ('reference refused: …'), or None if it is this job's own."""
    try:
        if JobStore.is_blob_key(blob):
            check(blob, sha256, job_id, shared_dir)
        else:
            probe_shared(blob, sha256, job_id, shared_dir)
    except MissingFile:
        return None  # not an intrusion: the stage reports the image as gone
    except RefusedReference as exc:
        return f"reference refused: {exc}"
    return None
