"""Which operators form the one Edge TPU segment: the split follows data, not execution order.

``edgetpu_compiler`` 16 hands the graph to the same kind of partitioner TensorFlow Lite's
delegates use (``PartitionGraphIntoIndependentNodeSubsets``): operators are grouped into
subsets that alternate between "can map" and "cannot map", each subset taking, in
execution order and again until nothing changes, every operator of its kind whose inputs
are already available. The compiler maps the first "can map" subset and leaves every
other operator on the CPU ("More than one subgraph is not supported").

What follows from it, and what the real compiled models show:

* an operator after the first unmappable one still maps when it does not depend on it
  (movenet_single_pose_lightning_ptq: a head after the ARG_MAX at 89 maps);
* unmappable operators that only read the graph's inputs (a leading CAST or QUANTIZE)
  form a subset of their own before the segment and do not cut it (the same model's
  CAST + QUANTIZE at 0 and 1);
* everything that depends on an operator left on the CPU stays on the CPU, even if it
  could map (deeplabv3_mnv2_pascal_quant: the CONCATENATION and CONV_2Ds after the
  RESIZE_BILINEAR at 64).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Set

from compiler.tflite import Subgraph


@dataclass(frozen=True)
class NodeSubset:
    """Operators (indices, in the order they were taken) that one partition step grouped."""

    mappable: bool
    nodes: tuple[int, ...]


def partition(sg: Subgraph, mappable: Sequence[bool]) -> List[NodeSubset]:
    """Group ``sg``'s operators into alternating mappable / unmappable subsets.

    Args:
        sg: the subgraph; its operators are in execution order.
        mappable: for each operator, whether it could run on the Edge TPU on its own.

    Returns:
        the subsets in the order they are formed. Every operator is in exactly one,
        unless the graph has a cycle (then the operators on it are in none).
    """
    produced = {t for op in sg.operators for t in op.outputs if t >= 0}
    # Graph inputs, constants, variables (an LSTM's state) and absent optional inputs
    # are available from the start: no operator produces them.
    ready: Set[int] = {t for op in sg.operators for t in op.inputs if t >= 0 and t not in produced}
    ready.update(sg.inputs)
    done = [False] * len(sg.operators)
    subsets: List[NodeSubset] = []
    while True:
        kind: Optional[bool] = None
        nodes: List[int] = []
        progress = True
        while progress:
            progress = False
            for i, op in enumerate(sg.operators):
                if done[i] or any(t >= 0 and t not in ready for t in op.inputs):
                    continue
                if kind is None:
                    kind = bool(mappable[i])
                if bool(mappable[i]) != kind:
                    continue
                done[i] = True
                nodes.append(i)
                ready.update(t for t in op.outputs if t >= 0)
                progress = True
        if kind is None:
            return subsets
        subsets.append(NodeSubset(kind, tuple(nodes)))


def edgetpu_segment(subsets: Sequence[NodeSubset]) -> Set[int]:
    """The operators the compiler maps: the first mappable subset (empty when there is none)."""
    for subset in subsets:
        if subset.mappable:
            return set(subset.nodes)
    return set()


def ahead_of_segment(subsets: Sequence[NodeSubset]) -> Set[int]:
    """Operators that run on the CPU before the Edge TPU segment (a leading CAST or QUANTIZE)."""
    ahead: Set[int] = set()
    for subset in subsets:
        if subset.mappable:
            return ahead
        ahead.update(subset.nodes)
    return set()  # no segment at all: nothing runs "ahead" of it
