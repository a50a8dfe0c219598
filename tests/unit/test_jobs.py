"""The job runner: several workers, cancellation, and the shared captioner."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.fakes import GatedCaptioner
from tests.support.videos import write_video
from vidseek.indexer.pipeline import IngestConfig
from vidseek.indexer.planner import PlanConfig
from vidseek.server.jobs import JobRunner
from vidseek.storage.errors import CaptionerUnavailable, FailedPrecondition
from vidseek.storage.store import Store


@pytest.fixture
def videos(tmp_path: Path) -> list[str]:
    return [
        write_video(tmp_path / f"v{i}.mp4", seconds=8, colors=[(255, 0, 0)] * i + [(0, 0, 255)])
        for i in range(1, 4)
    ]


@pytest.fixture
def runner_factory(tmp_path: Path, embedder) -> Iterator:
    made: list[tuple[JobRunner, Store]] = []

    def make(workers: int, **options) -> tuple[JobRunner, GatedCaptioner, Store]:
        store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "faiss.index", embedder.dim)
        captioner = GatedCaptioner()
        config = IngestConfig(
            plan=PlanConfig(sample_fps=2.0, window_seconds=2.0, max_frame_pixels=160 * 96),
            batch_windows=1,
            max_in_flight=1,  # one window in hand at a time: cancelling stops after it
            **options,
        )
        runner = JobRunner(
            store, embedder, lambda: captioner, config, [], workers=workers, max_in_flight=1
        )
        made.append((runner, store))
        runner.start()
        return runner, captioner, store

    yield make
    for runner, store in made:
        runner.stop(timeout=30)
        store.close()


def test_ingest_decoders_run_at_the_configured_niceness(runner_factory, videos):
    runner, captioner, store = runner_factory(1, decode_nice=7)
    job = runner.submit(videos[0])
    assert captioner.waiting.wait(60)  # a window was decoded: the pool's process runs
    pid = runner._decode_pool.submit(lambda worker: worker.pid).result()
    assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 7)
    captioner.gate.set()
    _wait(lambda: _states(store, [job]) == ["succeeded"])


def test_ingest_decoders_decode_with_the_configured_threads(runner_factory, videos):
    from vidseek.server.app import ingest_config
    from vidseek.server.settings import load_settings

    assert ingest_config(load_settings(environ={})).decode_threads == 1  # the default
    runner, captioner, store = runner_factory(1, decode_threads=3)
    job = runner.submit(videos[0])
    assert captioner.waiting.wait(60)
    assert runner._decode_pool.submit(lambda worker: worker.codec_threads).result() == 3
    captioner.gate.set()
    _wait(lambda: _states(store, [job]) == ["succeeded"])


def _wait(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _states(store: Store, ids: Sequence[str]) -> list[str]:
    return [store.get_job(i).state for i in ids]


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_run_that_many_videos_at_once(runner_factory, videos, workers):
    runner, captioner, store = runner_factory(workers)
    ids = [runner.submit(v) for v in videos[:2]]
    assert captioner.waiting.wait(60)
    # The first job holds the captioner; a second worker takes the second job meanwhile.
    if workers == 2:
        _wait(lambda: _states(store, ids) == ["running", "running"])
    else:
        time.sleep(1.0)
        assert _states(store, ids) == ["running", "queued"]
    captioner.gate.set()
    _wait(lambda: _states(store, ids) == ["succeeded", "succeeded"])
    assert [store.get_job(i).windows_done for i in ids] == [4, 4]


def test_cancel_stops_a_running_job_after_its_window_and_keeps_what_was_committed(
    runner_factory, videos
):
    runner, captioner, store = runner_factory(1)
    running, queued = runner.submit(videos[0]), runner.submit(videos[1])
    assert captioner.waiting.wait(60)
    assert runner.cancel(queued).state == "cancelled"
    assert runner.cancel(running).state == "running"  # stops after the window in hand
    captioner.gate.set()
    _wait(lambda: store.get_job(running).state == "cancelled")
    job = store.get_job(running)
    assert job.windows_done == 1 < job.windows_total == 4
    assert len(store.window_rows(job.video_id)) == 1
    time.sleep(0.5)
    assert store.get_job(queued).state == "cancelled" and store.get_job(queued).video_id is None
    with pytest.raises(FailedPrecondition, match="already cancelled"):
        runner.cancel(running)


def test_a_resumed_job_counts_every_event_of_its_video(runner_factory, videos, caplog):
    caplog.set_level("INFO", logger="vidseek.server.jobs")
    runner, captioner, store = runner_factory(1)
    first = runner.submit(videos[0])
    assert captioner.waiting.wait(60)
    runner.cancel(first)  # stops after the window in hand
    captioner.gate.set()
    _wait(lambda: store.get_job(first).state == "cancelled")
    again = runner.submit(videos[0])
    _wait(lambda: store.get_job(again).state == "succeeded")
    job = store.get_job(again)
    assert job.windows_reused == 1 and job.windows_done == 4
    assert job.events_indexed == store.get_video(job.video_id).event_count > 0
    assert f"ingest job {again} ({videos[0]}) succeeded: {job.events_indexed} events" in caplog.text


def test_a_model_that_cannot_load_fails_every_queued_job_at_once(tmp_path, embedder, videos):
    calls: list[float] = []

    def unloadable():
        calls.append(time.monotonic())
        time.sleep(0.5)  # a hub that takes its time to say no
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "faiss.index", embedder.dim)
    config = IngestConfig(plan=PlanConfig(sample_fps=2.0, window_seconds=2.0), batch_windows=1)
    runner = JobRunner(store, embedder, unloadable, config, [], model="Qwen/Qwen3-VL-4B")
    runner.start()
    try:
        ids = [runner.submit(v) for v in videos]
        _wait(lambda: _states(store, ids) == ["failed"] * 3)
        assert len(calls) == 1  # loaded once, not once per job
        for job_id in ids:
            error = store.get_job(job_id).error
            assert "could not load the captioning model 'Qwen/Qwen3-VL-4B'" in error
            assert "couldn't connect" in error and "HF_HUB_OFFLINE=1" in error
    finally:
        runner.stop(timeout=30)
        store.close()


def test_an_already_indexed_file_is_done_at_submission_not_behind_a_running_job(
    runner_factory, videos, caplog
):
    caplog.set_level("INFO", logger="vidseek.server.jobs")
    runner, captioner, store = runner_factory(1)
    captioner.gate.set()
    first = runner.submit(videos[0])
    _wait(lambda: store.get_job(first).state == "succeeded")
    captioner.gate.clear()
    captioner.waiting.clear()
    long_job = runner.submit(videos[1])
    assert captioner.waiting.wait(60)  # the only worker is busy with another video
    again = runner.submit(videos[0], collection="archive")
    job = store.get_job(again)  # no waiting: decided at submission
    assert job.state == "succeeded" and store.get_job(long_job).state == "running"
    assert job.windows_reused == job.windows_done == job.windows_total == 4
    assert job.video_id == store.get_job(first).video_id
    assert job.events_indexed == store.get_video(job.video_id).event_count > 0
    assert store.get_video(job.video_id).collection == "archive"  # it had none
    assert "already indexed (same content)" in caplog.text
    captioner.gate.set()
    _wait(lambda: store.get_job(long_job).state == "succeeded")


@pytest.mark.parametrize("load_fails", [True, False])
def test_stopping_while_the_model_loads_logs_no_error_and_closes_a_late_model(
    tmp_path: Path, embedder, caplog, load_fails
):
    caplog.set_level("INFO")
    loading, release = threading.Event(), threading.Event()
    late = GatedCaptioner()
    closed: list[bool] = []
    late.close = lambda: closed.append(True)  # type: ignore[method-assign]

    def slow_model() -> GatedCaptioner:
        loading.set()
        assert release.wait(30)
        if load_fails:
            raise RuntimeError("interrupted while downloading the weights")
        return late

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "faiss.index", embedder.dim)
    runner = JobRunner(store, embedder, slow_model, IngestConfig(), [], model="m")
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            runner.captioner()  # as a refinement does, on its own thread
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=load)
    thread.start()
    try:
        assert loading.wait(30)
        runner.stop(timeout=0)  # SIGTERM: the server stops while the model loads
        release.set()
        thread.join(30)
    finally:
        store.close()
    (exc,) = outcome
    assert isinstance(exc, CaptionerUnavailable) and "stopping" in str(exc)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert closed == ([] if load_fails else [True])


def test_a_new_file_is_not_hashed_at_submission(runner_factory, videos, monkeypatch):
    import vidseek.server.jobs as jobs_module

    def no_hashing(path):
        raise AssertionError(f"{path} was hashed inside the RPC")

    runner, captioner, store = runner_factory(1)
    monkeypatch.setattr(jobs_module, "content_hash", no_hashing)
    job_id = runner.submit(videos[2])  # never seen: queued without reading the file
    assert store.get_job(job_id).state in ("queued", "running")
    monkeypatch.undo()
    captioner.gate.set()
    _wait(lambda: store.get_job(job_id).state == "succeeded")
