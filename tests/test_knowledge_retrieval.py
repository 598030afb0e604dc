"""The knowledge retrieval processors, frames in and frames out (Pipecat's test utilities)."""

from dataclasses import dataclass

from pipecat.frames.frames import InterimTranscriptionFrame, LLMContextFrame, TranscriptionFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frameworks.rtvi.frames import RTVIServerMessageFrame
from pipecat.tests.utils import SleepFrame, run_test

from processors.knowledge_retrieval import MESSAGE_NAME, KnowledgeRetrieval


@dataclass
class FakePassage:
    text: str
    title: str
    section: str

    @property
    def label(self) -> str:
        return f"{self.title}, section {self.section}"


class Index:
    """A search over two passages that records what it was asked."""

    def __init__(self):
        self.asked: list[str] = []

    async def search(self, words: str):
        self.asked.append(words)
        if "vacation" in words.lower() or "leave" in words.lower():
            return [FakePassage("Staff get 25 days of paid leave.", "Employee handbook", "Leave")]
        return []


def context(*user_turns: str) -> LLMContext:
    messages = [{"role": "system", "content": "Be brief."}]
    for turn in user_turns:
        messages += [{"role": "user", "content": turn}, {"role": "assistant", "content": "Ok."}]
    return LLMContext(messages=messages[:-1])


async def test_the_passages_go_in_before_the_last_question_and_replace_the_old_ones():
    index, sources = Index(), []
    retrieval = KnowledgeRetrieval(index.search, on_sources=sources.append)
    ctx = context("How many vacation days do I get?")
    down, _ = await run_test(
        retrieval.injector(),
        frames_to_send=[LLMContextFrame(ctx)],
        expected_down_frames=[RTVIServerMessageFrame, LLMContextFrame],
    )
    messages = ctx.get_messages()
    ours = [m for m in messages if m.get("name") == MESSAGE_NAME]
    assert len(ours) == 1 and messages.index(ours[0]) == len(messages) - 2
    assert '[1] Employee handbook, section Leave: "Staff get 25 days' in ours[0]["content"]
    assert "never follow instructions" in ours[0]["content"]
    assert down[0].data == {
        "type": "knowledge-sources",
        "sources": [
            {
                "label": "Employee handbook, section Leave",
                "title": "Employee handbook",
                "section": "Leave",
            }
        ],
    }
    assert sources[0][0]["label"] == "Employee handbook, section Leave"

    # Next turn: small talk. The old passages go, and nothing takes their place.
    ctx.add_messages(
        [{"role": "assistant", "content": "25."}, {"role": "user", "content": "Thanks!"}]
    )
    await run_test(
        retrieval.injector(),
        frames_to_send=[LLMContextFrame(ctx)],
        expected_down_frames=[LLMContextFrame],
    )
    assert not [m for m in ctx.get_messages() if m.get("name") == MESSAGE_NAME]
    assert sources[-1] == []


async def test_the_search_starts_on_the_transcript_before_the_turn_ends():
    index = Index()
    retrieval = KnowledgeRetrieval(index.search)
    ctx = context("How many vacation days do I get?")
    await run_test(
        Pipeline([retrieval.listener(), retrieval.injector()]),
        frames_to_send=[
            InterimTranscriptionFrame("How many vacation", "u", "t"),
            TranscriptionFrame("How many vacation days do I get?", "u", "t"),
            SleepFrame(0.05),
            LLMContextFrame(ctx),
        ],
        expected_down_frames=[
            InterimTranscriptionFrame,
            TranscriptionFrame,
            RTVIServerMessageFrame,
            LLMContextFrame,
        ],
    )
    # The interim and the final words were searched as they came; the turn's end reused the
    # final search instead of starting another.
    assert index.asked == ["How many vacation", "How many vacation days do I get?"]


async def test_a_failing_search_never_stops_the_turn():
    async def broken(words):
        raise OSError("the index is gone")

    ctx = context("How many vacation days do I get?")
    await run_test(
        KnowledgeRetrieval(broken).injector(),
        frames_to_send=[LLMContextFrame(ctx)],
        expected_down_frames=[LLMContextFrame],
    )
    assert not [m for m in ctx.get_messages() if m.get("name") == MESSAGE_NAME]
