"""The collector pause around admission cycles: off while any cycle runs, back as it was after
the last one, whether the cycles nest, overlap on threads, or fail."""

import gc
import threading

import pytest

from crater_hub.queue import collector


def test_the_collector_is_off_during_a_pause_and_on_again_after_nested_ones():
    assert gc.isenabled()
    with collector.paused():
        assert not gc.isenabled()
        with collector.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still runs
    assert gc.isenabled()


def test_overlapping_pauses_on_two_threads_leave_it_on_once_both_are_over():
    inside, leave = threading.Event(), threading.Event()

    def cycle():
        with collector.paused():
            inside.set()
            leave.wait(10)

    worker = threading.Thread(target=cycle)
    worker.start()
    assert inside.wait(10)
    with collector.paused():
        assert not gc.isenabled()
    assert not gc.isenabled()  # the worker's cycle is not over
    leave.set()
    worker.join(10)
    assert gc.isenabled()


def test_a_failing_cycle_turns_it_back_on_and_a_disabled_collector_stays_off():
    with pytest.raises(ValueError), collector.paused():
        raise ValueError("cycle failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector.paused():
            pass
        assert not gc.isenabled()  # it was off before: the pause does not turn it on
    finally:
        gc.enable()
