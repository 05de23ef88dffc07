"""The input-loss meter (pspnet_ros/ros/loss_meter.py, ROS-free) against known answers.

Each case is a camera at a known rate whose frames reach the callback or not; the meter must
count exactly the frames that did not, and give the camera's period, with sequence numbers
(Kilted: with the publisher gid; Jazzy: without) and with stamps alone (Humble).
"""

from __future__ import annotations

import pytest

from pspnet_ros.ros.loss_meter import LossMeter, fundamental_period

T0 = 1_700_000_000.0
HZ = 30.0
PERIOD = 1.0 / HZ


def play(meter, frames, *, gid=None, use_seq=True, seq0=1, t0=T0, info=False):
    """Feed frame indices that got through (camera frame i: stamp t0 + i/HZ, sequence seq0 + i).

    Arrival time = the stamp (a node that keeps up); returns the total counted lost.
    """
    lost = 0
    for i in frames:
        stamp = t0 + i * PERIOD
        seq = seq0 + i if use_seq else None
        if info:
            meter.camera_info(stamp, seq=seq, publisher=gid, now=stamp - T0)
        lost += meter.image(stamp, seq=seq, publisher=gid, now=stamp - T0)
    return lost


@pytest.fixture(params=["gid", "no_gid", "stamps"])
def source(request):
    """Kilted (sequence + gid), Jazzy (sequence, no gid), Humble (stamps only)."""
    return {"gid": {"gid": b"cam-A"}, "no_gid": {"gid": None},
            "stamps": {"gid": None, "use_seq": False}}[request.param]


def test_steady_camera_loses_nothing_and_gives_its_rate(source):
    meter = LossMeter()
    assert play(meter, range(200), **source) == 0
    assert meter.period() == pytest.approx(PERIOD, rel=1e-6)


def test_single_drops_are_counted_exactly(source):
    meter = LossMeter()
    dropped = {20, 45, 46, 90, 150, 151, 152}
    frames = [i for i in range(200) if i not in dropped]
    assert play(meter, frames, **source) == len(dropped)
    assert meter.period() == pytest.approx(PERIOD, rel=1e-6)


def test_burst_losses_are_counted_exactly(source):
    meter = LossMeter()
    dropped = set(range(50, 62)) | set(range(100, 130))  # 12 then 30 frames in a row
    frames = [i for i in range(200) if i not in dropped]
    assert play(meter, frames, **source) == 42


def test_bursty_arrival_does_not_count_losses(source):
    """Frames arrive in bunches (a busy network or executor): stamps stay the camera's."""
    meter = LossMeter()
    lost = 0
    for i in range(200):
        stamp = T0 + i * PERIOD
        arrival = (i // 10) * 10 * PERIOD  # ten at once
        seq = i + 1 if source.get("use_seq", True) else None
        lost += meter.image(stamp, seq=seq, publisher=source["gid"], now=arrival)
    assert lost == 0
    assert meter.period() == pytest.approx(PERIOD, rel=1e-6)


def test_a_callback_three_times_slower_than_the_camera():
    """Sequence numbers (Jazzy, Kilted): every third frame gets through.

    The camera_info gets through as often (from its own queue): the rate is the camera's, the
    rest are lost.
    """
    meter = LossMeter()
    frames = list(range(0, 300, 3))
    lost = play(meter, frames, gid=None, info=True)
    assert lost == 300 - 3 - len(frames) + 1  # all but the ones received after the first
    assert 1.0 / meter.period() == pytest.approx(HZ, rel=1e-6)


def test_stamps_alone_find_the_rate_under_mixed_gaps():
    """Humble: a callback 3.2x slower than the camera sees gaps of 3 and 4 periods."""
    meter = LossMeter()
    frames, i = [], 0
    while i < 600:
        frames.append(i)
        i += 4 if len(frames) % 5 == 0 else 3
    lost = play(meter, frames, use_seq=False)
    assert 1.0 / meter.period() == pytest.approx(HZ, rel=1e-6)
    # before the period is known (3 gaps) nothing can be counted
    # until a 4-period gap shows, 3-period gaps look like a 3x slower camera (a few gaps)
    assert frames[-1] - (len(frames) - 1) - 16 <= lost <= frames[-1] - (len(frames) - 1)


@pytest.mark.parametrize("gid", [b"cam-A", None])
def test_publisher_restart_is_not_a_loss(gid):
    meter = LossMeter()
    assert play(meter, range(100), gid=gid) == 0
    # the driver restarts: sequence numbers begin again at 1, stamps go on after 0.5 s
    restarted = gid + b"'" if gid else None
    assert play(meter, range(115, 200), gid=restarted, seq0=1 - 115) == 0
    assert play(meter, [205, 206], gid=restarted, seq0=1 - 115) == 5  # and it counts again


def test_restarted_publishers_are_forgotten():
    meter = LossMeter(max_streams=8)
    for k in range(50):  # a camera driver restarted 50 times
        play(meter, range(k * 10, k * 10 + 5), gid=f"gid-{k}".encode())
    assert meter.tracked_publishers() <= 8
    meter.image(T0 + 1000.0, seq=1, publisher=b"late", now=1000.0)  # stale ones expire by age
    assert meter.tracked_publishers() == 1


@pytest.mark.parametrize("gid", [True, False])
def test_several_publishers_on_one_topic(gid):
    """Two cameras on one topic, sequence numbers far apart, each losing its own frames."""
    meter = LossMeter()
    a_drop, b_drop = {30, 31, 77}, {10, 55, 56, 57, 120}
    events = []
    for i in range(150):
        if i not in a_drop:
            events.append((T0 + i * PERIOD, 1000 + i, b"A"))
        if i not in b_drop:
            events.append((T0 + i * PERIOD + 0.004, 7 + i, b"B"))  # 4 ms later, own counter
    lost = sum(meter.image(stamp, seq=seq, publisher=pub if gid else None, now=stamp - T0)
               for stamp, seq, pub in events)
    assert lost == len(a_drop) + len(b_drop)
    assert meter.period() == pytest.approx(PERIOD, rel=1e-3)


def test_reset_forgets_the_inactive_time():
    """Lifecycle deactivate -> 60 s -> activate (reset): the frames in between are not lost."""
    meter = LossMeter()
    play(meter, range(100))
    meter.reset()
    assert meter.period() is None
    assert play(meter, range(1900, 1950)) == 0


@pytest.mark.parametrize("use_seq", [True, False])
def test_long_gaps_are_capped_not_counted(use_seq):
    """Without a reset, a 60 s gap (paused camera, inactive node) is not 1,800 lost frames."""
    meter = LossMeter()
    play(meter, range(100), use_seq=use_seq)
    assert play(meter, range(1900, 1950), use_seq=use_seq) == 0
    # a gap in arrival alone (stamps look continuous: a bag paused and resumed) is capped too
    meter = LossMeter()
    assert meter.image(T0, seq=1, now=0.0) == 0
    assert meter.image(T0 + PERIOD, seq=2, now=0.1) == 0
    assert meter.image(T0 + 3 * PERIOD, seq=4, now=60.0) == 0


def test_stamps_going_back_restart_the_count():
    meter = LossMeter()
    play(meter, range(100), use_seq=False)
    assert play(meter, range(0, 50), use_seq=False) == 0  # a looping bag


def test_fundamental_period():
    t = 0.02
    assert fundamental_period([t] * 5) == pytest.approx(t)
    assert fundamental_period([3 * t] * 20 + [4 * t] * 5) == pytest.approx(t)
    assert fundamental_period([t, t, 2 * t, t, 5 * t]) == pytest.approx(t)
    assert fundamental_period([t, t]) is None
