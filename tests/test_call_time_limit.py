"""CallTimeLimitProcessor: goodbye then the end of the session, once the limit is reached."""

import pytest
from pipecat.frames.frames import EndWorkerFrame, TextFrame, TTSSpeakFrame
from pipecat.tests.utils import SleepFrame, run_test

from processors.call_time_limit import CallTimeLimitProcessor


async def test_frames_pass_through_before_the_limit():
    limit = CallTimeLimitProcessor(max_secs=60)
    down, _ = await run_test(
        limit, frames_to_send=[TextFrame("hello")], expected_down_frames=[TextFrame]
    )
    assert down[0].text == "hello"
    assert not limit.expired


async def test_at_the_limit_it_says_goodbye_and_ends_the_session():
    limit = CallTimeLimitProcessor(max_secs=0.1, goodbye="Time is up, bye!")
    down, _ = await run_test(
        limit,
        frames_to_send=[TextFrame("hello"), SleepFrame(0.4)],
        expected_down_frames=None,
        send_end_frame=False,
    )
    kinds = [type(frame) for frame in down]
    assert kinds[:3] == [TextFrame, TTSSpeakFrame, EndWorkerFrame]
    assert down[1].text == "Time is up, bye!" and not down[1].interruptible
    assert limit.expired


def test_a_limit_must_be_positive():
    with pytest.raises(ValueError):
        CallTimeLimitProcessor(max_secs=0)
