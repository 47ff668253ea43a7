"""The frame loop (one source through the scheduler): every frame from files, newest frame from
live sources, errors surface."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator, List

import numpy as np
import pytest

from edge_agent.errors import InputError
from edge_agent.inference.classifier import Inferred, build_classifier, model_info
from edge_agent.inference.result import Classification
from edge_agent.inference.scheduler import NamedSource, SourceScheduler
from edge_agent.inference.sources import Frame, Source, open_source

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "digits_int8.tflite"


class FastCamera(Source):
    """Stands in for a camera (none exists here): produces frames faster than they are consumed."""

    live = True
    name = "fake-cam"

    def __init__(self, frames: int, fail_after: int = 0) -> None:
        self.total = frames
        self.fail_after = fail_after
        self.produced = 0

    def frames(self) -> Iterator[Frame]:
        image = np.zeros((32, 32, 3), np.uint8)
        for i in range(self.total):
            if self.fail_after and i == self.fail_after:
                raise InputError("fake-cam stopped delivering frames (disconnected?)")
            self.produced += 1
            yield Frame(image, self.name, i, time.time())
            time.sleep(0.0005)


def slow_sink(results: List[Classification]):
    def sink(result: Classification) -> None:
        results.append(result)
        time.sleep(0.01)

    return sink


@pytest.fixture(scope="module")
def classifier():
    return build_classifier(DEMO, None, device_id="test")


def test_files_hand_over_every_frame_in_order(classifier):
    results: List[Classification] = []
    stats = SourceScheduler(
        classifier, [NamedSource("input", open_source(str(ROOT / "images")))], [slow_sink(results)]
    ).run()
    assert stats.frames == 20 and stats.dropped == 0
    assert [r.frame for r in results] == list(range(20))


def test_live_source_keeps_the_newest_frame_and_counts_drops(classifier):
    results: List[Classification] = []
    cam = FastCamera(300)
    stats = SourceScheduler(classifier, [NamedSource("input", cam)], [slow_sink(results)]).run()
    frames = [r.frame for r in results]
    assert frames == sorted(frames)
    assert stats.frames + stats.dropped <= cam.produced
    assert stats.dropped > 0 and stats.frames < cam.produced


def test_camera_disconnect_ends_the_loop_with_input_error(classifier):
    with pytest.raises(InputError, match="disconnected"):
        SourceScheduler(classifier, [NamedSource("input", FastCamera(100, fail_after=5))], []).run()


def test_stop_event_ends_a_live_loop(classifier):
    stop = threading.Event()
    results: List[Classification] = []
    loop = SourceScheduler(classifier, [NamedSource("input", FastCamera(10**6))], [slow_sink(results)], stop=stop)
    threading.Timer(0.3, stop.set).start()
    stats = loop.run()
    assert stop.is_set() and 0 < stats.frames < 10**6


def test_count_stops_after_n_results(classifier):
    stats = SourceScheduler(classifier, [NamedSource("input", FastCamera(1000))], [], count=7).run()
    assert stats.frames == 7


def test_the_next_frame_is_inferred_while_a_result_is_in_the_sinks(classifier):
    second_inferred = threading.Event()
    inferred: List[int] = []
    infer = classifier.infer

    def counting_infer(*args: Any) -> Inferred:
        done = infer(*args)
        inferred.append(done.frame.index)
        if len(inferred) == 2:
            second_inferred.set()
        return done

    overlapped: List[bool] = []

    def sink(result: Classification) -> None:
        if result.frame == 0:  # with inference waiting for the sinks this would time out
            overlapped.append(second_inferred.wait(10))

    classifier.infer = counting_infer
    try:
        stats = SourceScheduler(classifier, [NamedSource("input", open_source(str(ROOT / "images")))], [sink]).run()
    finally:
        del classifier.infer
    assert overlapped == [True] and stats.frames == 20


def test_a_failing_sink_ends_the_run_with_its_error_and_stops_inference(classifier):
    seen: List[Classification] = []

    def sink(result: Classification) -> None:
        seen.append(result)
        if len(seen) == 4:  # not frame 3: a live source's frame may be dropped for a newer one
            raise RuntimeError("sink broke")

    with pytest.raises(RuntimeError, match="sink broke"):
        SourceScheduler(classifier, [NamedSource("input", FastCamera(10**6))], [sink]).run()
    assert not [t for t in threading.enumerate() if t.name in ("inference", "reader-input")]


def test_swap_changes_the_model_between_frames(classifier, tmp_path: Path):
    other = build_classifier(ROOT / "models" / "digits_float.tflite", ROOT / "labels" / "digits.txt")
    swapped = build_classifier(DEMO, None, device_id="swap")
    seen: List[str] = []

    def sink(result: Classification) -> None:
        seen.append(result.model.name)
        if len(seen) == 3:
            swapped.swap(other.runtime, other.labels, model_info(other.runtime, "digits", "2"))

    SourceScheduler(swapped, [NamedSource("input", open_source(str(ROOT / "images")))], [sink]).run()
    assert seen[:3] == ["digits_int8"] * 3
    assert seen[-1] == "digits"
