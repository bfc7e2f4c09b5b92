"""The steady rate of a WAN link from interface-counter samples (tools/netsim/rates.py)."""

import pytest

from tools.netsim.rates import Sample, steady_rate, timeline
from tools.netsim.topology import FRAME_OVERHEAD

FRAME = 1448  # payload of one full-size frame


def frames(t: float, n: int) -> Sample:
    """Counters after ``n`` full frames, at ``t`` seconds."""
    return Sample(t, n * (FRAME + FRAME_OVERHEAD), n)


def test_steady_rate_leaves_out_a_slow_start_and_a_slow_end():
    # 1,000 frames: 50 in the first 5 s (connecting), 900 at 100 frames/s, the last 50 over 5 s
    samples = [frames(0, 0), frames(5, 50)] + [frames(5 + i, 50 + 100 * i) for i in range(1, 10)] + [frames(19, 1000)]
    total = 1000 * FRAME
    rate = steady_rate(samples, total)
    assert rate is not None
    # from the first sample at >= 10 % (t=6, 150 frames) to the first at >= 90 % (t=14, 950 frames)
    assert rate.seconds == pytest.approx(8.0)
    assert rate.payload_kbps == pytest.approx(100 * FRAME * 8 / 1000)
    assert rate.wire_kbps == pytest.approx(100 * (FRAME + FRAME_OVERHEAD) * 8 / 1000)
    # over the whole download the average is well under the steady rate: that is why it is not used
    assert total * 8 / 1000 / 19 < 0.6 * rate.payload_kbps


def test_steady_rate_counts_from_the_first_sample_not_from_zero():
    # counters already hold traffic from before the release: only the growth counts
    samples = [Sample(t, 10_000_000 + t * 1_000_000, 0) for t in range(11)]
    rate = steady_rate(samples, 10_000_000)
    assert rate is not None and rate.payload_kbps == pytest.approx(8_000)


@pytest.mark.parametrize("samples, total", [
    ([], 1000),
    ([Sample(0, 0, 0)], 1000),
    ([Sample(0, 0, 0), Sample(1, 500, 0)], 1000),  # never reached 90 %
    ([Sample(0, 0, 0), Sample(1, 1000, 0)], 1000),  # 10 % and 90 % in the same sample: no time between
    ([Sample(0, 0, 0), Sample(1, 1000, 0)], 0),
])
def test_steady_rate_is_none_when_the_samples_cannot_tell(samples, total):
    assert steady_rate(samples, total) is None


def test_timeline_times_the_download_from_publish_and_leaves_out_idle_chatter():
    # an idle link's chatter (1 frame a second) before publish at t=10, and after the download:
    # 100 frames/s from t=11 to t=15
    samples = [frames(t / 10, t // 10) for t in range(0, 111)]
    samples += [frames(11 + i / 10, 11 + 10 * i) for i in range(1, 41)]
    samples += [frames(15 + i / 10, 411 + i // 10) for i in range(1, 40)]
    found = timeline(samples, 10.0, step_s=1.0, idle_bytes=2 * FRAME)
    assert found is not None
    assert found.first_byte_s == pytest.approx(1.0)  # the sample before the first busy one
    assert found.last_byte_s == pytest.approx(5.0)
    assert found.fetch_kbps == pytest.approx(100 * FRAME * 8 / 1000, rel=0.01)
    assert found.kbps == pytest.approx((100 * FRAME * 8 / 1000,) * 4, abs=1)  # whole kbit/s


def test_timeline_is_none_when_nothing_arrived():
    assert timeline([frames(t, t) for t in range(10)], 0.0, idle_bytes=2 * FRAME) is None
    assert timeline([], 0.0) is None
