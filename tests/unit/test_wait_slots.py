"""WaitSlots: the process-wide and per-tenant caps on requests that wait."""

from __future__ import annotations

from bulkapi.api.holds import WaitSlots, wait_slots


def test_the_process_cap_holds_across_tenants_and_slots_come_back() -> None:
    slots = WaitSlots(limit=3, per_tenant=2)
    assert slots.acquire("a") and slots.acquire("a")
    assert not slots.acquire("a")  # a's share is used up, though a slot is free
    assert slots.acquire("b")
    assert not slots.acquire("c")  # the process is full
    slots.release("a")
    assert slots.acquire("c")  # the released slot serves anyone under their share
    assert not slots.acquire("b")


def test_a_tenant_gets_half_the_slots_and_always_at_least_one() -> None:
    assert wait_slots(8).per_tenant == 4
    assert wait_slots(1).per_tenant == 1
    assert not wait_slots(0).acquire("a")
