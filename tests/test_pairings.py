"""The known-good table: which libedgetpu build works with which interpreter (docs/runtime-matrix.md)."""

from __future__ import annotations

from helpers import standin

from edge_agent.inference import pairings
from edge_agent.inference.pairings import CRASHES, UNVERIFIED, WORKS, backend_order, describe_libedgetpu, verdict


def test_the_stock_version_string_is_recognised_as_the_tf_2_5_build() -> None:
    assert pairings.STOCK_VERSION_STRING == standin.STOCK_16_VERSION
    lib = describe_libedgetpu(None, standin.STOCK_16_VERSION)
    assert lib.tf == "2.5" and "stock" in lib.label


def test_a_community_package_version_names_the_tensorflow_it_was_built_for() -> None:
    lib = describe_libedgetpu("libedgetpu1-max=16.0tf2.17.1-1", standin.SOURCE_BUILD_VERSION)
    assert lib.tf == "2.17" and "16.0tf2.17.1-1" in lib.label
    assert describe_libedgetpu("libedgetpu1-std=16.0", None).tf == "2.5"
    assert describe_libedgetpu(None, standin.SOURCE_BUILD_VERSION).tf is None


def test_stock_libedgetpu_works_with_tflite_up_to_2_11_and_crashes_after() -> None:
    stock = describe_libedgetpu("libedgetpu1-std=16.0", standin.STOCK_16_VERSION)
    assert verdict(stock, "tflite-runtime", "2.5.0.post1")[0] == WORKS
    assert verdict(stock, "tflite-runtime", "2.11.0")[0] == WORKS
    assert verdict(stock, "tflite-runtime", "2.14.0")[0] == CRASHES
    assert verdict(stock, "tensorflow", "2.21.0")[0] == CRASHES
    assert verdict(stock, "litert", "2.3.0")[0] == CRASHES


def test_a_rebuilt_libedgetpu_works_with_its_own_tflite_release() -> None:
    built = describe_libedgetpu("libedgetpu1-max=16.0tf2.17.1-1", None)
    assert verdict(built, "tflite-runtime", "2.17.1")[0] == WORKS
    assert verdict(built, "tflite-runtime", "2.14.0")[0] == UNVERIFIED
    assert verdict(built, "litert", "2.3.0")[0] == UNVERIFIED
    tf213 = describe_libedgetpu("libedgetpu1-std=16.0tf2.13.1-1", None)
    assert verdict(tf213, "tflite-runtime", "2.15.0")[0] == WORKS


def test_runtime_auto_prefers_the_interpreter_known_to_work_with_the_installed_runtime() -> None:
    stock = describe_libedgetpu("libedgetpu1-std=16.0", None)
    installed = {"litert": "2.3.0", "tflite-runtime": "2.11.0", "tensorflow": "2.21.0"}
    assert backend_order(stock, installed) == ["tflite-runtime", "litert", "tensorflow"]
    built = describe_libedgetpu("libedgetpu1-max=16.0tf2.17.1-1", None)
    assert backend_order(built, {"litert": "2.3.0", "tflite-runtime": "2.17.1"}) == ["tflite-runtime", "litert"]
    unknown = describe_libedgetpu(None, None)
    assert backend_order(unknown, {"litert": "2.3.0", "tensorflow": "2.21.0"}) == ["litert", "tensorflow"]


def test_the_installed_package_is_read_from_dpkg_as_name_and_version() -> None:
    found = pairings.dpkg_libedgetpu()  # None here; libedgetpu1-std=16.0 (or similar) on a Coral
    assert found is None or found.startswith(("libedgetpu1-std=", "libedgetpu1-max="))
