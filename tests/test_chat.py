"""The chat batch as a plain function: one engine call, per-request errors, keys derived from the id."""

import pydantic
import pytest

from app import keys
from app.chat import ChatBatch, ChatItem, answer_batch
from config.sampling import StageSampling
from workers.deterministic_engine import DeterministicTestEngine

BATCH_ID = "chat-" + "0" * 32


def items(n: int) -> list[ChatItem]:
    return [
        ChatItem(request_id=f"r{i}", sha256=str(i) * 64, text="Describe.", sampling=StageSampling(max_tokens=64))
        for i in range(n)
    ]


def test_a_batch_is_one_engine_call_and_a_missing_image_fails_only_its_own_request():
    engine = DeterministicTestEngine()
    answers = answer_batch(
        ChatBatch(batch_id=BATCH_ID, model="m", items=items(4)), lambda: engine, [b"jpeg", None, b"jpeg", b"jpeg"]
    )
    assert [a.request_id for a in answers] == ["r0", "r1", "r2", "r3"]
    assert answers[1].error and "no longer in Redis" in answers[1].error
    assert all(a.content and a.error is None for a in answers if a.request_id != "r1")
    assert engine.calls == 1


def test_an_engine_failing_on_one_request_splits_the_batch_and_fails_that_request_only():
    failing = "2" * 64
    engine = DeterministicTestEngine(fail_on=[failing[:16]])
    answers = answer_batch(ChatBatch(batch_id=BATCH_ID, model="m", items=items(4)), lambda: engine, [b"x"] * 4)
    assert [a.error is not None for a in answers] == [False, False, True, False]
    assert "engine error" in answers[2].error


def test_the_worker_derives_every_key_from_a_plain_batch_id_and_refuses_any_other():
    batch = ChatBatch(batch_id=BATCH_ID, model="m", items=items(2))
    assert batch.blob_keys == [keys.chat_blob(BATCH_ID, 0), keys.chat_blob(BATCH_ID, 1)]
    for forged in ("vlmq:job:abc", "chat-../../x", "chat-" + "0" * 31 + "g"):
        with pytest.raises(pydantic.ValidationError):
            ChatBatch(batch_id=forged, model="m", items=items(1))
