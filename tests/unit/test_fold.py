"""The pure fold (events/fold.py): every transition, every deadline, terminal states, settings.

Each test builds a pool's decision state by folding real events, then checks one more event. The
integration suite (tests/integration/test_store.py) checks that this fold equals the Lua scripts.
"""

from __future__ import annotations

import copy

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import events as ev
from events import Event, Recorded
from events.fold import PoolState, accepts, evolve, fire, fold, state_of
from events.lifecycle import DEADLINES, GONE_KEPT_MS, LIVE, NONE, SAME, STATES, TERMINAL, TRANSITIONS

T0 = 1_700_000_000_000
MIN, HOUR = 60_000, 3_600_000
VM = "brave-otter"
CFG = ev.PoolConfigured(size=5, template="tpl", clone_limit=3, ready_ttl=30, timeout=10)


def rec(event: Event, vm: str = VM, at: int = T0) -> Recorded:
    tag = event.__struct_config__.tag
    assert isinstance(tag, str)
    return Recorded(
        stream="p",
        position=f"{at}-0",
        event_id=f"e{at}",
        type=tag,
        at=at,
        vm=vm,
        actor="test",
        correlation_id="",
        causation_id="",
        version=1,
        event=event,
    )  # type: ignore[arg-type]


_REQUESTED: list[Event] = [ev.VmCloneRequested(template="tpl")]
_COMPLETED: list[Event] = [*_REQUESTED, ev.VmCloneFailed(error="boom")]
PATHS: dict[str, list[Event]] = {
    NONE: [],
    "cloning": _REQUESTED,
    "booting": [*_REQUESTED, ev.VmCloned(seconds=1.5)],
    "ready": [*_REQUESTED, ev.VmCloned(seconds=1.5), ev.VmReady(boot_seconds=3.0)],
    "running": [
        *_REQUESTED,
        ev.VmCloned(seconds=1.5),
        ev.VmReady(boot_seconds=3.0),
        ev.VmCheckedOut(lifetime=2),
    ],
    "completed": _COMPLETED,
    "destroying": [*_COMPLETED, ev.VmDestroyStarted(worker="w")],
    "discovered": [ev.VmDiscovered()],
    "destroyed": [*_COMPLETED, ev.VmDestroyed()],
    "vanished": [*_REQUESTED, ev.VmCloned(seconds=1.5), ev.VmVanished(last_state="booting")],
}
"""Events that take a fresh VM into each state (terminal ones included: the VM is then unknown)."""

SAMPLES: dict[str, Event] = {
    "vm.clone-requested": ev.VmCloneRequested(template="tpl"),
    "vm.clone-started": ev.VmCloneStarted(worker="w", attempt=2),
    "vm.cloned": ev.VmCloned(seconds=2.0, ip="10.0.0.1"),
    "vm.clone-failed": ev.VmCloneFailed(error="boom"),
    "vm.ready": ev.VmReady(boot_seconds=4.0),
    "vm.checked-out": ev.VmCheckedOut(lifetime=3),
    "vm.checkout-reverted": ev.VmCheckoutReverted(),
    "vm.lifetime-changed": ev.VmLifetimeChanged(hours=5),
    "vm.tagged": ev.VmTagged(tags={"a": "b"}),
    "vm.returned": ev.VmReturned(),
    "vm.expired": ev.VmExpired(reason="lifetime"),
    "vm.discarded": ev.VmDiscarded(reason="drained"),
    "vm.destroy-requested": ev.VmDestroyRequested(attempt=2),
    "vm.destroy-started": ev.VmDestroyStarted(worker="w"),
    "vm.destroy-failed": ev.VmDestroyFailed(error="busy", attempt=2, retry_in=5.0),
    "vm.destroyed": ev.VmDestroyed(seconds=1.0),
    "vm.discovered": ev.VmDiscovered(),
    "vm.vanished": ev.VmVanished(last_state="ready"),
    "vm.disk-requested": ev.VmDiskRequested(size_gb=8),
    "vm.disk-added": ev.VmDiskAdded(size_gb=8),
    "vm.snapshot-requested": ev.VmSnapshotRequested(name="s"),
    "vm.snapshot-taken": ev.VmSnapshotTaken(name="s"),
    "vm.revert-requested": ev.VmRevertRequested(name="s"),
    "vm.reverted": ev.VmReverted(name="s"),
    "vm.task-failed": ev.VmTaskFailed(task="disk", error="x"),
    "vm.migrated": ev.VmMigrated(host="h2"),
}


def reach(start: str, cfg: ev.PoolConfigured = CFG, vm: str = VM) -> PoolState:
    """The state after configuring the pool and walking ``vm`` into ``start``, one second apart."""
    records = [rec(cfg, vm="", at=T0)]
    records += [rec(e, vm=vm, at=T0 + 1000 * (i + 1)) for i, e in enumerate(PATHS[start])]
    state = fold(records)
    effective = NONE if start in TERMINAL else start
    assert state_of(state, vm) == effective
    return state


def snapshot(state: PoolState) -> object:
    return msgspec.to_builtins(state)


def assert_consistent(state: PoolState) -> None:
    """What apply keeps true: one entry time per live VM; armed deadlines only in their states."""
    assert set(state.entered) == set(state.state)
    assert set(state.state.values()) <= LIVE
    kinds = {d.kind: d for d in DEADLINES}
    for member in state.due:
        kind, _, vm = member.partition(":")
        assert state.state.get(vm) in kinds[kind].states, member
    for member in state.carry:
        kind, _, vm = member.partition(":")
        assert state.state.get(vm) in kinds[kind].states, member


def test_samples_cover_every_transition() -> None:
    assert set(SAMPLES) == set(TRANSITIONS)
    assert set(PATHS) == {NONE, *STATES, *TERMINAL}


ALL_CASES = [(tag, start) for tag in sorted(TRANSITIONS) for start in PATHS]


@pytest.mark.parametrize(("tag", "start"), ALL_CASES, ids=[f"{t}@{s or 'none'}" for t, s in ALL_CASES])
def test_transition(tag: str, start: str) -> None:
    """Allowed sources lead to the target; any other source is refused and changes nothing."""
    before = reach(start)
    kept = snapshot(before)
    cur = state_of(before, VM)
    rule = TRANSITIONS[tag]
    at = T0 + 60_000
    after = evolve(before, rec(SAMPLES[tag], at=at))
    assert snapshot(before) == kept, "evolve mutated its input"
    if cur not in rule.sources:
        assert not accepts(before, tag, VM)
        assert after is before
        return
    assert accepts(before, tag, VM)
    target = cur if rule.target == SAME else rule.target
    if target in TERMINAL:
        assert VM not in after.state
        assert VM not in after.entered
        assert after.gone[VM] == at
        assert not [m for m in (*after.due, *after.carry) if m.endswith(f":{VM}")]
    else:
        assert after.state[VM] == target
        assert after.entered[VM] == (before.entered[VM] if target == cur else at)
    assert after.cfg == before.cfg
    assert_consistent(after)


@pytest.mark.parametrize("tag", sorted(set(TRANSITIONS) - {"vm.clone-requested", "vm.discovered"}))
def test_events_about_unknown_vms_are_refused(tag: str) -> None:
    state = reach("running")
    assert evolve(state, rec(SAMPLES[tag], vm="nobody")) is state


def test_pool_events_without_rule_change_nothing() -> None:
    state = reach("ready")
    assert evolve(state, rec(ev.PoolReset(), vm="")) is state


def test_configured_writes_settings_as_redis_stores_them() -> None:
    state = fold([rec(CFG, vm="")])
    assert state.cfg == {
        "size": "5",
        "template": "tpl",
        "clone_limit": "3",
        "ready_ttl": "30",
        "timeout": "10",
        "clone_target": "",
        "yaml": ev.encode(CFG).decode(),
    }
    changed = ev.PoolConfigured(
        size=0, template="t2", clone_limit=1, ready_ttl=0, timeout=2, clone_target="c1", source="api"
    )
    after = evolve(state, rec(changed, vm=""))
    assert after.cfg == {
        "size": "0",
        "template": "t2",
        "clone_limit": "1",
        "ready_ttl": "0",
        "timeout": "2",
        "clone_target": "c1",
        "yaml": ev.encode(CFG).decode(),
    }
    assert state.cfg["size"] == "5"  # the input is untouched


# --- deadlines -----------------------------------------------------------------------------------


def test_boot_deadline_is_armed_on_request_and_kept_while_pending() -> None:
    state = fold([rec(CFG, vm=""), rec(ev.VmCloneRequested(template="tpl"), at=T0 + 10)])
    assert state.due == {f"boot:{VM}": T0 + 10 + 10 * MIN}
    booting = evolve(state, rec(ev.VmCloned(seconds=1.0), at=T0 + 5000))
    assert booting.due == state.due  # cloning -> booting stays within the deadline's states


def test_boot_deadline_is_disarmed_on_ready_and_ttl_armed() -> None:
    state = reach("booting")
    ready = evolve(state, rec(ev.VmReady(boot_seconds=1.0), at=T0 + 9000))
    assert ready.due == {f"ttl:{VM}": T0 + 9000 + 30 * MIN}


@pytest.mark.parametrize(
    "event",
    [ev.VmCloneFailed(error="x"), ev.VmExpired(reason="boot_timeout"), ev.VmDiscarded(reason="drained")],
)
def test_boot_deadline_is_disarmed_when_a_pending_vm_is_retired(event: Event) -> None:
    state = evolve(reach("cloning"), rec(event, at=T0 + 9000))
    assert state.state[VM] == "completed"
    assert state.due == {}


def test_zero_settings_arm_nothing() -> None:
    cfg = ev.PoolConfigured(size=5, template="tpl", clone_limit=3, ready_ttl=0, timeout=0)
    assert reach("cloning", cfg).due == {}
    assert reach("ready", cfg).due == {}


def test_deadline_uses_the_settings_at_entry() -> None:
    state = reach("ready")
    armed = dict(state.due)
    later = evolve(
        state,
        rec(
            ev.PoolConfigured(size=5, template="tpl", clone_limit=3, ready_ttl=1, timeout=1),
            vm="",
            at=T0 + 99_000,
        ),
    )
    assert later.due == armed


def test_lifetime_deadline_is_armed_on_checkout() -> None:
    state = evolve(reach("ready"), rec(ev.VmCheckedOut(lifetime=3), at=T0 + 20_000))
    assert state.due == {f"life:{VM}": T0 + 20_000 + 3 * HOUR}  # ttl disarmed, life armed


def test_checkout_without_lifetime_arms_nothing() -> None:
    state = evolve(reach("ready"), rec(ev.VmCheckedOut(lifetime=0), at=T0 + 20_000))
    assert state.due == {}


def test_lifetime_change_rearms_relative_to_entry_not_now() -> None:
    state = evolve(reach("ready"), rec(ev.VmCheckedOut(lifetime=3), at=T0 + 20_000))
    changed = evolve(state, rec(ev.VmLifetimeChanged(hours=7), at=T0 + 2 * HOUR))
    assert changed.due == {f"life:{VM}": T0 + 20_000 + 7 * HOUR}
    assert changed.entered[VM] == T0 + 20_000


def test_lifetime_change_arms_a_vm_checked_out_without_lifetime() -> None:
    state = evolve(reach("ready"), rec(ev.VmCheckedOut(lifetime=0), at=T0 + 20_000))
    changed = evolve(state, rec(ev.VmLifetimeChanged(hours=1), at=T0 + 50_000))
    assert changed.due == {f"life:{VM}": T0 + 20_000 + HOUR}


def test_lifetime_change_to_zero_disarms() -> None:
    state = evolve(reach("ready"), rec(ev.VmCheckedOut(lifetime=3), at=T0 + 20_000))
    assert evolve(state, rec(ev.VmLifetimeChanged(hours=0), at=T0 + 30_000)).due == {}


def test_lifetime_change_is_refused_unless_running() -> None:
    state = reach("ready")
    assert evolve(state, rec(ev.VmLifetimeChanged(hours=9), at=T0 + 30_000)) is state


def test_return_disarms_the_lifetime() -> None:
    state = evolve(reach("running"), rec(ev.VmReturned(), at=T0 + 30_000))
    assert state.state[VM] == "completed"
    assert state.due == {}


def test_checkout_revert_disarms_life_and_rearms_ttl_from_the_revert() -> None:
    state = evolve(reach("running"), rec(ev.VmCheckoutReverted(), at=T0 + 40_000))
    assert state.state[VM] == "ready"
    assert state.entered[VM] == T0 + 40_000
    assert state.due == {f"ttl:{VM}": T0 + 40_000 + 30 * MIN}


def _failed_destroy(attempt: int, retry_in: float, at: int = T0 + 50_000) -> PoolState:
    failed = ev.VmDestroyFailed(error="busy", attempt=attempt, retry_in=retry_in)
    return evolve(reach("destroying"), rec(failed, at=at))


def test_destroy_failure_arms_a_retry_from_now_with_the_next_attempt() -> None:
    state = _failed_destroy(attempt=2, retry_in=20.0)
    assert state.state[VM] == "completed"
    assert state.due == {f"retry:{VM}": T0 + 50_000 + 20_000}
    assert state.carry == {f"retry:{VM}": 3}
    assert fire(state, T0 + 69_999) == []
    assert fire(state, T0 + 70_000) == [
        (VM, "vm.destroy-requested", b'{"type":"vm.destroy-requested","attempt":3}')
    ]


def test_first_destroy_failure_retries_as_attempt_two() -> None:
    state = _failed_destroy(attempt=1, retry_in=5.0)
    assert state.carry == {f"retry:{VM}": 2}


def test_the_fired_retry_disarms_its_deadline_and_carry() -> None:
    """The event a deadline fires disarms it inside the fold (as in apply), so replay never fires a
    retry twice even though vm.destroy-requested leaves the VM in 'completed'."""
    state = _failed_destroy(attempt=2, retry_in=20.0)
    body = fire(state, T0 + 70_000)[0][2]
    fired = evolve(state, rec(msgspec.json.decode(body, type=ev.AnyEvent), at=T0 + 70_000))
    assert fired.state[VM] == "completed"
    assert (fired.due, fired.carry) == ({}, {})
    assert fire(fired, T0 + 99 * HOUR) == []


def test_destroy_failure_without_retry_time_arms_nothing() -> None:
    state = _failed_destroy(attempt=2, retry_in=0.0)
    assert state.state[VM] == "completed"
    assert state.due == {}


def test_fractional_retry_times_round_down_to_ms() -> None:
    state = _failed_destroy(attempt=2, retry_in=0.0125)
    assert state.due == {f"retry:{VM}": T0 + 50_000 + 12}


def test_leaving_completed_disarms_the_retry_and_its_carry() -> None:
    state = _failed_destroy(attempt=2, retry_in=20.0)
    started = evolve(state, rec(ev.VmDestroyStarted(worker="w2"), at=T0 + 70_001))
    assert started.state[VM] == "destroying"
    assert started.due == {}
    assert started.carry == {}


def test_destroyed_and_vanished_record_gone_time_and_forget_the_vm() -> None:
    state = _failed_destroy(attempt=2, retry_in=20.0)
    gone = evolve(state, rec(ev.VmDestroyed(), at=T0 + 80_000))
    assert gone.gone == {VM: T0 + 80_000}
    assert (gone.state, gone.entered, gone.due, gone.carry) == ({}, {}, {}, {})
    vanished = evolve(reach("running"), rec(ev.VmVanished(last_state="running"), at=T0 + 90_000))
    assert vanished.gone == {VM: T0 + 90_000}
    assert vanished.due == {}
    assert vanished.state == {}


def test_gone_names_are_forgotten_by_event_time() -> None:
    """A terminal event forgets names gone for longer than GONE_KEPT_MS before it (not at it)."""
    records = [rec(CFG, vm="")]
    for vm, at in [("old", T0), ("edge", T0 + 1000)]:
        records += [rec(ev.VmDiscovered(), vm=vm, at=at), rec(ev.VmVanished(), vm=vm, at=at)]
    state = fold(records)
    assert state.gone == {"old": T0, "edge": T0 + 1000}
    later = evolve(
        evolve(state, rec(ev.VmDiscovered(), vm="new", at=T0 + 1000 + GONE_KEPT_MS)),
        rec(ev.VmVanished(), vm="new", at=T0 + 1000 + GONE_KEPT_MS),
    )
    assert later.gone == {"edge": T0 + 1000, "new": T0 + 1000 + GONE_KEPT_MS}
    assert evolve(state, rec(ev.VmDiscovered(), vm="x", at=T0 + 5 * GONE_KEPT_MS)).gone == state.gone


def test_a_gone_name_can_be_requested_again_and_keeps_its_gone_time() -> None:
    """The state machine treats a gone VM as unknown; refill avoids gone names, not apply."""
    state = evolve(reach("destroyed"), rec(ev.VmCloneRequested(template="tpl"), at=T0 + 99_000))
    assert state.state[VM] == "cloning"
    assert VM in state.gone


def test_fire_skips_deadlines_whose_vm_left_their_states() -> None:
    state = reach("running")
    stale = msgspec.structs.replace(state, due={f"ttl:{VM}": T0, f"boot:{VM}": T0, f"nope:{VM}": T0})
    assert fire(stale, T0 + HOUR) == []


def test_fire_orders_by_due_time_then_member_and_respects_the_limit() -> None:
    records = [rec(CFG, vm="")]
    for vm, at in [("b", T0), ("c", T0 - 1000), ("a", T0)]:
        records.append(rec(ev.VmCloneRequested(template="tpl"), vm=vm, at=at))
    state = fold(records)
    now = T0 + 10 * MIN
    expired = b'{"type":"vm.expired","reason":"boot_timeout"}'
    assert fire(state, now) == [
        ("c", "vm.expired", expired),
        ("a", "vm.expired", expired),
        ("b", "vm.expired", expired),
    ]
    assert fire(state, now, limit=2) == [("c", "vm.expired", expired), ("a", "vm.expired", expired)]
    assert fire(state, now - 1) == [("c", "vm.expired", expired)]


@pytest.mark.parametrize("start", ["cloning", "booting", "ready", "running"])
def test_every_deadline_fires_its_event_from_its_states(start: str) -> None:
    state = reach(start)
    ((member, at),) = state.due.items()
    kind = member.partition(":")[0]
    (d,) = [d for d in DEADLINES if d.kind == kind]
    assert start in d.states
    assert fire(state, at - 1) == []
    ((vm, _etype, body),) = fire(state, at)
    assert (vm, body) == (VM, d.fires)
    assert evolve(state, rec(msgspec.json.decode(body, type=ev.AnyEvent), at=at)).state[VM] == "completed"


# --- properties ----------------------------------------------------------------------------------

VMS = ["a", "b", "c"]
_steps = st.lists(
    st.tuples(st.sampled_from(VMS), st.sampled_from(sorted(SAMPLES)), st.integers(0, 3 * HOUR)),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(steps=_steps)
def test_any_history_keeps_the_decision_state_consistent(steps: list[tuple[str, str, int]]) -> None:
    state = fold([rec(CFG, vm="")])
    now = T0
    for vm, tag, dt in steps:
        now += dt
        before, kept = state, copy.deepcopy(snapshot(state))
        state = evolve(state, rec(SAMPLES[tag], vm=vm, at=now))
        assert snapshot(before) == kept
        assert (state is before) == (not accepts(before, tag, vm))
        assert_consistent(state)


@settings(max_examples=50, deadline=None)
@given(steps=_steps, cut=st.integers(0, 60))
def test_fold_is_evolve_applied_in_order(steps: list[tuple[str, str, int]], cut: int) -> None:
    records = [rec(CFG, vm="")] + [rec(SAMPLES[t], vm=vm, at=T0 + dt) for vm, t, dt in steps]
    whole = fold(records)
    assert fold(records[cut:], fold(records[:cut])) == whole
    state = PoolState()
    for r in records:
        state = evolve(state, r)
    assert state == whole


# --- on-demand: slices in the pool, requests in the control slot ----------------------------------

SLICE = "r1:alias"
OPENED = ev.PoolOndemandRequested(request_id="r1", requested_as="alias", count=2, lifetime=4, max_retries=1)
OD_CLONE = ev.VmCloneRequested(template="tpl", reason="ondemand", request_id="r1", pool_alias="alias")


def od_pool(*events: tuple[Event, str]) -> PoolState:
    """Configure, open ``OPENED``, then fold ``(event, vm)`` pairs one second apart."""
    records = [rec(CFG, vm="", at=T0), rec(OPENED, vm="", at=T0 + 1)]
    records += [rec(e, vm=vm, at=T0 + 1000 * (i + 1)) for i, (e, vm) in enumerate(events)]
    return fold(records)


def test_open_slice_counts_clones_to_start_and_refuses_a_second_open() -> None:
    state = od_pool()
    assert (state.odq, state.odn) == ({SLICE: T0 + 1}, {f"w:{SLICE}": "2"})
    assert msgspec.json.decode(state.odm[SLICE])["max_retries"] == 1
    assert evolve(state, rec(OPENED, vm="", at=T0 + 5)) is state


def test_clone_for_a_slice_is_tracked_and_delivery_is_counted() -> None:
    state = od_pool(
        (OD_CLONE, "a"),
        (ev.VmCloned(seconds=1.0), "a"),
        (ev.VmReady(boot_seconds=1.0), "a"),
        (ev.VmCheckedOut(lifetime=4, request_id="r1", requested_as="alias"), "a"),
    )
    assert state.od == {"a": SLICE}
    assert (state.odn[f"w:{SLICE}"], state.odn[f"d:{SLICE}"]) == ("1", "1")
    assert state.due["life:a"] == T0 + 4000 + 4 * HOUR  # the request's lifetime, from delivery
    assert state.state["a"] == "running"


def test_lost_clone_is_retried_then_the_slice_fails() -> None:
    once = od_pool((OD_CLONE, "a"), (ev.VmCloneFailed(error="busy"), "a"))
    assert (once.odn[f"w:{SLICE}"], once.odn[f"r:{SLICE}"]) == ("2", "1")
    twice = od_pool(
        (OD_CLONE, "a"),
        (ev.VmCloneFailed(error="busy"), "a"),
        (OD_CLONE, "b"),
        (ev.VmCloned(seconds=1.0), "b"),
        (ev.VmExpired(reason="boot_timeout"), "b"),
    )
    assert twice.odn[f"f:{SLICE}"] == "Max retry attempts exceeded"
    assert twice.odn[f"w:{SLICE}"] == "0"


def test_permanent_failure_fails_the_slice_at_once() -> None:
    state = od_pool((OD_CLONE, "a"), (ev.VmCloneFailed(error="template not found", permanent=True), "a"))
    assert state.odn[f"f:{SLICE}"] == "Configuration error: template not found"
    assert f"r:{SLICE}" not in state.odn


def test_closing_forgets_slices_and_losses_after_it_are_not_retried() -> None:
    state = od_pool(
        (OD_CLONE, "a"),
        (ev.PoolOndemandClosed(request_id="r1", reason="cancelled"), ""),
        (ev.VmDiscarded(reason="on-demand request cancelled"), "a"),
    )
    assert (state.odq, state.odm, state.odn) == ({}, {}, {})
    assert state.od == {"a": SLICE}  # until the VM is gone
    gone = fold([rec(ev.VmDestroyed(), vm="a", at=T0 + 9000)], state)
    assert gone.od == {}


def test_pool_vms_are_untouched_by_ondemand_bookkeeping() -> None:
    state = od_pool((ev.VmCloneRequested(template="tpl"), "p"), (ev.VmCloneFailed(error="busy"), "p"))
    assert (state.od, state.odn) == ({}, {f"w:{SLICE}": "2"})


def test_request_status_transitions_and_deadlines() -> None:
    from events.od_fold import RequestsState, evolve_requests, fold_requests

    accepted = ev.OndemandAccepted(request_id="r1", slices={"a": {"p": 1}}, lifetime=1, ttl_ms=5 * MIN)
    state = fold_requests([rec(accepted, vm="", at=T0)])
    assert (state.status, state.due, state.work) == ({"r1": "pending"}, {"r1": T0 + 5 * MIN}, {"r1": T0})
    assert evolve_requests(state, rec(accepted, vm="", at=T0 + 1)) is state  # duplicate id
    done = fold_requests([rec(ev.OndemandFulfilled(request_id="r1"), vm="", at=T0 + 2)], state)
    assert (done.status["r1"], done.due) == ("fulfilled", {})
    assert (
        evolve_requests(done, rec(ev.OndemandFailed(request_id="r1", reason="ttl"), vm="", at=T0 + 3)) is done
    )
    wrong = rec(ev.OndemandReleased(request_id="r1", status="failed"), vm="", at=T0 + 3)
    assert evolve_requests(done, wrong) is done
    released = fold_requests(
        [rec(ev.OndemandReleased(request_id="r1", status="fulfilled"), vm="", at=T0 + 3)], done
    )
    assert released.work == {}
    cancelled = fold_requests([rec(ev.OndemandCancelled(request_id="r1"), vm="", at=T0 + 4)], released)
    assert (cancelled.status["r1"], cancelled.work) == (
        "cancelled",
        {"r1": T0 + 4},
    )  # work again: destroy VMs
    assert (
        evolve_requests(RequestsState(), rec(ev.OndemandCancelled(request_id="x"), vm="", at=T0))
        == RequestsState()
    )
