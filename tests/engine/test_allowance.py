"""A caller's allowance on one mapping run: a fan-out stops once its payloads run out (and records where), and
a set stop ends the run at the next element, through every handler that catches a failed field or event."""

from __future__ import annotations

import threading

import pytest
from shipmap.engine import Cut, Stopped, TransformError, allowed, checkpoint, parse_mapping

MAPPING = parse_mapping(
    "shipmap: 1\nname: fan\ntargets:\n  cancel:\n    kind: fenix.order_cancel\n    each: orders\n"
    "    fields:\n      id: {path: id, type: id, required: true}\n      status: {literal: CANCELLED}\n"
    "      cancelled_at: {literal: '2024-11-14T10:00:00Z'}\n      cancel_reason: {literal: customer}\n",
    file="fan.yaml",
)
(TARGET,) = MAPPING.targets


def test_a_fan_out_stops_when_the_payloads_run_out_and_records_the_cut() -> None:
    # The third element has no id: mapping it would be an error; the allowance ends the fan-out before it.
    source = {"orders": [{"id": 1}, {"id": 2}, {}, {"id": 4}]}
    with allowed(payloads=2) as allowance:
        produced, errors = TARGET.collect(source)
    assert [key for key, _ in produced] == ["0", "1"]
    assert errors == []
    assert allowance.cuts == [Cut("cancel", mapped=2, not_mapped=2)]
    assert allowance.payloads == 0
    # The same within the trace and the runtime's outputs; without an allowance every element is mapped.
    with allowed(payloads=1) as allowance:
        assert list(MAPPING.trace(source).payloads) == ["cancel[0]"]
    assert allowance.cuts == [Cut("cancel", mapped=1, not_mapped=3)]
    with allowed(payloads=2):
        assert [output.label for output in MAPPING.outputs(source)] == ["cancel[0]", "cancel[1]"]
    with pytest.raises(TransformError, match="required field has no value"):
        MAPPING.outputs(source)
    produced, errors = TARGET.collect(source)
    assert [key for key, _ in produced] == ["0", "1", "3"]
    assert len(errors) == 1
    # Exactly as many elements as payloads allowed: nothing is cut.
    with allowed(payloads=2) as allowance:
        TARGET.collect({"orders": [{"id": 1}, {"id": 2}]})
    assert allowance.cuts == []


def test_a_set_stop_ends_the_run_at_the_next_element_and_inner_allowances_keep_it() -> None:
    stop = threading.Event()
    source = {"orders": [{"id": 1}]}
    # A limit set inside an allowance with a stop still ends at that stop.
    with allowed(stop=stop), allowed(payloads=10):
        assert len(TARGET.collect(source)[0]) == 1
        stop.set()
        with pytest.raises(Stopped):
            TARGET.collect(source)  # collect words any Exception as a field error; Stopped passes
        with pytest.raises(Stopped):
            MAPPING.trace(source)
        with pytest.raises(Stopped):
            checkpoint()
    checkpoint()  # no allowance: nothing to stop
    assert len(TARGET.collect(source)[0]) == 1


ONE_PAYLOAD = parse_mapping(
    "shipmap: 1\nname: one\ntargets:\n  cancel:\n    kind: fenix.order_cancel\n    fields:\n"
    "      id: {literal: '1'}\n      status: {literal: CANCELLED}\n"
    "      cancelled_at: {literal: '2024-11-14T10:00:00Z'}\n"
    "      cancel_reason: {template: '{{ root.reason }}'}\n"
    "      notes: {each: orders, template: '{{ this.id }}'}\n",
    file="one.yaml",
)


@pytest.mark.parametrize("stopped_at", ["a computed field", "an element of an each: list"])
def test_a_set_stop_ends_one_payload_at_its_next_computed_field(stopped_at: str) -> None:
    """No fan-out and one target: nothing was checked, so one payload whose fields run long (a studio sample's
    list of 5,000 notes, each scanning the document) ended only when done. It ends at its next computed field,
    or element of an each: list; literals and plain paths are not checked (nothing there to stop)."""
    (target,) = ONE_PAYLOAD.targets
    source = {"reason": "customer", "orders": [{"id": 1}, {"id": 2}]}
    if stopped_at == "an element of an each: list":
        target = parse_mapping(
            "shipmap: 1\nname: one\ntargets:\n  cancel:\n    kind: fenix.order_cancel\n    fields:\n"
            "      notes: {each: orders, template: '{{ this.id }}'}\n",
            file="one.yaml",
        ).targets[0]
    stop = threading.Event()
    with allowed(stop=stop):
        produced, errors = target.collect(source)
        assert errors == [] and len(produced) == 1
        stop.set()
        with pytest.raises(Stopped):
            target.collect(source)
        with pytest.raises(Stopped):
            ONE_PAYLOAD.trace(source)
    assert ONE_PAYLOAD.targets[0].collect(source)[0][0][1]["notes"] == [1, 2]  # no allowance: all made
