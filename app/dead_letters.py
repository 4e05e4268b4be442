"""Images set aside after they killed their worker or failed every retry, until someone requeues them."""

from __future__ import annotations

from typing import Any

from app import keys
from app.schemas import DeadLetter


class DeadLetters:
    """Mixed into app.store.JobStore: `self.r` comes from there."""

    r: Any

    def dead_letter(self, letter: DeadLetter) -> None:
        self.r.hset(keys.DEAD_LETTERS, letter.id, letter.model_dump_json())

    def dead_letters(self, job_id: str | None = None) -> list[DeadLetter]:
        letters = [DeadLetter.model_validate_json(v) for v in self.r.hvals(keys.DEAD_LETTERS)]
        return sorted((d for d in letters if job_id is None or d.job_id == job_id), key=lambda d: d.at)

    def take_dead_letter(self, letter_id: str) -> DeadLetter | None:
        """Remove a dead letter and return it; None if there is none with this id (or it was taken)."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hget(keys.DEAD_LETTERS, letter_id)
        pipe.hdel(keys.DEAD_LETTERS, letter_id)
        raw, removed = pipe.execute()
        return DeadLetter.model_validate_json(raw) if raw and removed else None
