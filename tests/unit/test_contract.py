"""The wire contract: generated code is fresh, names come from descriptors, __all__ is pinned."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import vidseek.client
from vidseek.client import _convert
from vidseek.server import mapping
from vidseek.server.search import MomentResult, SearchPage, SearchQuery, VideoHits
from vidseek.storage.models import IngestJobRow
from vidseek.storage.store import EventRecord, VideoRecord
from vidseek.v1 import video_search_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "client" / "vidseek" / "v1"


def test_generated_code_matches_the_proto(tmp_path: Path):
    subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "vidseek" / "v1").glob("*_pb2*")}
    committed = {p.name: p.read_bytes() for p in GENERATED.glob("*_pb2*")}
    assert fresh.keys() == committed.keys()
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"regenerate with `python proto/generate.py`: {stale} differ"


def test_service_has_the_required_rpcs():
    methods = set(pb.DESCRIPTOR.services_by_name["VideoSearch"].methods_by_name)
    assert {
        "IngestVideo",
        "GetIngestJob",
        "Search",
        "GetVideo",
        "ListVideos",
        "DeleteVideo",
    } <= methods
    assert pb.DESCRIPTOR.package == "vidseek.v1"


def test_sdk_public_names_are_pinned():
    assert sorted(vidseek.client.__all__) == sorted(
        [
            "AsyncClient",
            "Client",
            "DeadlineExceededError",
            "Event",
            "FailedPreconditionError",
            "FieldViolation",
            "IngestJob",
            "InvalidArgumentError",
            "JobState",
            "Moment",
            "NotFoundError",
            "PermissionDeniedError",
            "ResourceExhaustedError",
            "SearchOptions",
            "SearchPage",
            "ServerError",
            "UnauthenticatedError",
            "UnavailableError",
            "Video",
            "VideoHits",
            "VidseekClientError",
        ]
    )
    for name in vidseek.client.__all__:
        assert hasattr(vidseek.client, name)


def test_sdk_does_not_import_server_side_packages():
    code = (
        "import sys, vidseek.client; "
        "bad = [m for m in ('torch', 'vllm', 'faiss', 'sqlalchemy', 'vidseek.server') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_moment_and_query_mapping_round_trip():
    m = MomentResult(
        video_id="abc",
        start_seconds=1.5,
        end_seconds=9.25,
        description="a door",
        score=0.5,
        event_ids=(1, 2**62),
        video_uri="/v.mp4",
    )
    back = mapping.moment_to_proto(m)
    assert (
        back.video_id,
        back.start_seconds,
        back.end_seconds,
        back.description,
        list(back.event_ids),
        back.video_uri,
    ) == ("abc", 1.5, 9.25, "a door", [1, 2**62], "/v.mp4")
    assert back.score == 0.5
    q = mapping.search_query_from_proto(
        pb.SearchRequest(query="x", top_k=3, video_ids=["a"], min_score=0.25)
    )
    assert q == SearchQuery(text="x", top_k=3, video_ids=("a",), min_score=0.25)
    assert (q.start_seconds, q.end_seconds) == (None, None)  # unset: unbounded


def test_every_search_request_field_reaches_the_query():
    req = pb.SearchRequest(
        query="x",
        top_k=4,
        video_ids=["a", "b"],
        min_score=-0.5,
        start_seconds=0.0,
        end_seconds=90.5,
        group_by_video=True,
        moments_per_video=2,
        page_token="tok",
        refine=True,
        collection="matches",
    )
    assert mapping.search_query_from_proto(req) == SearchQuery(
        text="x",
        top_k=4,
        video_ids=("a", "b"),
        min_score=-0.5,
        start_seconds=0.0,  # set to 0 is not unset
        end_seconds=90.5,
        group_by_video=True,
        moments_per_video=2,
        page_token="tok",
        collection="matches",
        refine=True,
    )
    named = {f.name for f in pb.SearchRequest.DESCRIPTOR.fields} - {"query"}
    assert named <= set(SearchQuery.__dataclass_fields__)


def test_search_page_mapping_keeps_groups_refinement_and_token():
    coarse = MomentResult("v", 10.0, 20.0, "a goal", 0.75, (1,), "/v.mp4")
    refined = MomentResult("v", 11.0, 12.0, "a goal", 0.5, (2,), "/v.mp4", 30.0, 40.0, refined=True)
    page = SearchPage(
        moments=(coarse, refined),
        videos=(VideoHits("v", 0.75, (coarse, refined), "/v.mp4"),),
        next_page_token="next",
    )
    resp = mapping.search_response_to_proto(page)
    assert resp.next_page_token == "next"
    assert [m.refined for m in resp.moments] == [False, True]
    assert not resp.moments[0].HasField("coarse_start_seconds")
    assert (resp.moments[1].coarse_start_seconds, resp.moments[1].coarse_end_seconds) == (30, 40)
    (group,) = resp.videos
    assert (group.video_id, group.score, group.video_uri) == ("v", 0.75, "/v.mp4")
    assert list(group.moments) == list(resp.moments)
    # The SDK reads the same message back into its own models.
    sdk = _convert.search_page(resp)
    assert sdk.next_page_token == "next"
    assert sdk[1].refined and (sdk[1].coarse_start_seconds, sdk[1].coarse_end_seconds) == (30, 40)
    assert sdk[0].coarse_start_seconds is None
    assert sdk.videos[0].moments == tuple(sdk)


def test_video_job_event_mapping():
    v = VideoRecord(
        id="v1",
        uri="/a.mp4",
        content_hash="h",
        duration=3.5,
        fps=29.97,
        width=640,
        height=352,
        frame_count=105,
        event_count=4,
        created_at=1.0,
        collection="clips",
    )
    pv = mapping.video_to_proto(v)
    assert (pv.video_id, pv.fps, pv.frame_count, pv.event_count) == ("v1", 29.97, 105, 4)
    assert pv.collection == _convert.video(pv).collection == "clips"
    job = IngestJobRow(
        id="j",
        uri="/a.mp4",
        state="running",
        video_id=None,
        windows_total=3,
        windows_done=1,
        windows_unparsed=0,
        windows_skipped=1,
        collection="clips",
        events_indexed=2,
        error="",
        plan="p",
        created_at=1.0,
        updated_at=2.0,
    )
    pj = mapping.job_to_proto(job)
    assert pj.state == pb.JOB_STATE_RUNNING and pj.video_id == "" and pj.windows_done == 1
    assert (pj.windows_skipped, pj.collection) == (1, "clips")
    sdk_job = _convert.job(pj)
    assert (sdk_job.windows_skipped, sdk_job.collection) == (1, "clips")
    pe = mapping.event_to_proto(
        EventRecord(id=7, video_id="v1", start_seconds=1.0, end_seconds=2.0, text="t")
    )
    assert (pe.event_id, pe.description) == (7, "t")


def test_page_tokens():
    assert mapping.parse_page_token("") == 0
    assert mapping.parse_page_token("200") == 200
    assert mapping.page_token(0, 100, 100) == "100"
    assert mapping.page_token(100, 100, 7) == ""
    import pytest

    from vidseek.storage.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="page_token"):
        mapping.parse_page_token("abc")


def test_async_client_has_every_method_of_the_client():
    import inspect

    from vidseek.client import AsyncClient, Client

    def public(cls: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(fn)
            for name, fn in vars(cls).items()
            if callable(fn) and not name.startswith("_")
        }

    sync, aio = public(Client), public(AsyncClient)
    assert sync.keys() == aio.keys()
    for name, sig in sync.items():
        fn = getattr(AsyncClient, name)
        assert inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn), name
        assert list(aio[name].parameters) == list(sig.parameters), name
