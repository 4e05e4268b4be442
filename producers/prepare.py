"""Moved to app.decode (CPU workers prepare images too); kept so existing imports still work."""

from app.decode import (  # noqa: F401
    ROTATED,
    Failed,
    Prepared,
    PrepareLimits,
    open_under,
    prepare_bytes,
    prepare_file,
)
