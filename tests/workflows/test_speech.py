"""The speech splitter (workflows/speech.py) without servers: markers, markdown, labels, sentence chunks; and how a
job's result gets its segments (`with_speech`), and which jobs may ask for them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from characters import Character, describe_validation_error
from workflows.models import SPEECH_SEGMENT_CHARS, ChatJob, ChatResult, GroupReply, SpeechSegment
from workflows.speech import Voice, chunks, sentence_ends, speech_segments, voice_of, with_speech

MIRA = Voice("Mira", "alto-2", ("Mira",))


def parts(text: str, voice: Voice = MIRA, **options: object) -> list[tuple[str, str]]:
    return [(s.kind, s.text) for s in speech_segments(text, voice, **options)]  # type: ignore[arg-type]


def test_novel_style_quotes_are_dialogue_and_the_rest_narration() -> None:
    reply = 'Mira looks up from the bar. "Shut that door. Sit by the fire." *She pours something warm.*'
    assert parts(reply) == [
        ("narration", "Mira looks up from the bar."),
        ("dialogue", "Shut that door. Sit by the fire."),
        ("narration", "She pours something warm."),
    ]
    [first, *_] = speech_segments(reply, MIRA)
    assert first == SpeechSegment(speaker="Mira", kind="narration", text="Mira looks up from the bar.", voice="alto-2")


def test_chat_style_without_quotes_speaks_the_plain_text_and_narrates_the_actions() -> None:
    assert parts("*smiles* Hello there, traveller. *waves* Sit anywhere.") == [
        ("narration", "smiles"),
        ("dialogue", "Hello there, traveller."),
        ("narration", "waves"),
        ("dialogue", "Sit anywhere."),
    ]
    assert parts("Just a plain line.") == [("dialogue", "Just a plain line.")]


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        ("“Curly quotes,” she says.", "Curly quotes,"),
        ("«Guillemets,» dit-elle.", "Guillemets,"),
        ("„Deutsche Anführung“, sagt sie.", "Deutsche Anführung"),
        ("「日本語のかぎ括弧」と彼女は言った。", "日本語のかぎ括弧"),
        ("『二重かぎ括弧』と言った。", "二重かぎ括弧"),
        ('"Straight quotes," she says.', "Straight quotes,"),
    ],
)
def test_every_kind_of_quote_is_dialogue_and_its_marks_go(reply: str, said: str) -> None:
    [dialogue, narration] = parts(reply)
    assert dialogue == ("dialogue", said)
    assert narration[0] == "narration" and not set('"“”«»„「」『』') & set(narration[1])


def test_an_action_inside_dialogue_and_a_quote_inside_an_action_nest() -> None:
    assert parts('"Come here, *she beckons with one finger* quickly."') == [
        ("dialogue", "Come here,"),
        ("narration", "she beckons with one finger"),
        ("dialogue", "quickly."),
    ]
    assert parts('*She leans in and whispers "not here" before leaving.*') == [
        ("narration", "She leans in and whispers"),
        ("dialogue", "not here"),
        ("narration", "before leaving."),
    ]


def test_unbalanced_markers_end_at_the_line_and_a_stray_closing_quote_goes() -> None:
    assert parts('"This quote never closes\nShe waits by the door.') == [
        ("dialogue", "This quote never closes"),
        ("narration", "She waits by the door."),
    ]
    assert parts("*an action that never closes\nHello.") == [
        ("narration", "an action that never closes"),
        ("dialogue", "Hello."),
    ]
    assert parts("Fine then” she says, “go.") == [("narration", "Fine then she says,"), ("dialogue", "go.")]
    # An asterisk closing an action closes a quote left open inside it.
    assert parts('*She mutters "never mind* and turns away. "Bye."') == [
        ("narration", "She mutters"),
        ("dialogue", "never mind"),
        ("narration", "and turns away."),
        ("dialogue", "Bye."),
    ]


def test_markdown_emoji_and_name_labels_go() -> None:
    reply = (
        "**Mira:** *wipes the bar* 😀✨ **Well**, __look__ who it is!\n"
        "# A heading\n> quoted line\n- a bullet\n1. numbered\n---\n"
        "See [the map](http://x.example/map) ![pic](http://x.example/p.png) and `the ledger`.\n"
        "<b>Bold</b> ~~gone~~ 👍🏽\n"
        "```python\nprint('code is not spoken')\n```\nmira: Last line."
    )
    said = " ".join(text for _, text in parts(reply))
    for gone in (
        "Mira:",
        "mira:",
        "**",
        "__",
        "😀",
        "✨",
        "👍",
        "🏽",
        "#",
        ">",
        "---",
        "http",
        "`",
        "<b>",
        "~~",
        "print",
    ):
        assert gone not in said, gone
    for kept in (
        "Well, look who it is!",
        "A heading",
        "quoted line",
        "a bullet",
        "numbered",
        "See the map and the ledger.",
        "Bold gone",
        "Last line.",
    ):
        assert kept in said, kept
    assert parts("Theo: Hi.", voice_of(Character(name="Theo Marlowe"))) == [("dialogue", "Hi.")]


def test_pieces_of_one_kind_join_and_pieces_without_words_go() -> None:
    assert parts('"Hi." "How are you?" *nods* . "Good."') == [
        ("dialogue", "Hi. How are you?"),
        ("narration", "nods"),
        ("dialogue", "Good."),
    ]
    assert parts('*...* "—" 😀 ** "!"') == []


@pytest.mark.parametrize("reply", ["", "   \n ", "***", '""', "😀🎉", "```\ncode only\n```"])
def test_nothing_speakable_gives_no_segments(reply: str) -> None:
    assert speech_segments(reply, MIRA) == []


def test_a_long_piece_is_split_at_sentence_ends_into_chunks_that_fit() -> None:
    sentences = [f"Sentence number {i} goes on for a while, as sentences in a tavern do." for i in range(20)]
    text = " ".join(sentences)
    found = chunks(text)
    assert len(found) > 1 and all(len(c) <= SPEECH_SEGMENT_CHARS for c in found)
    assert " ".join(found) == text  # nothing lost, nothing added
    assert all(c.endswith("do.") for c in found)  # whole sentences only
    # As many whole sentences as fit: no chunk could take the next one's first sentence.
    for chunk, following in zip(found, found[1:], strict=False):
        assert len(chunk) + 1 + len(following.split(" do. ")[0] + " do.") > SPEECH_SEGMENT_CHARS


def test_a_chunk_of_punctuation_alone_is_no_segment() -> None:
    text = "a" * 398 + ". ... !!! " + "b" * 398 + "."
    assert [s.text for s in speech_segments(text, MIRA)] == ["a" * 398 + ".", "b" * 398 + "."]


def test_abbreviations_and_ellipses_mid_sentence_do_not_end_a_sentence() -> None:
    text = "Mr. Holt and Dr. J. R. Vance met St. Clair... then they left. Later, e.g. at noon, they came back… Oh well."
    ends = [text[:end].rstrip() for end in sentence_ends(text)]
    assert ends == ["Mr. Holt and Dr. J. R. Vance met St. Clair... then they left.", text[: text.index(" Oh")]]
    assert sentence_ends("So did I. Then we left.") == [len("So did I. ")]


def test_a_sentence_longer_than_a_chunk_is_split_at_a_clause_then_a_word_then_anywhere() -> None:
    clauses = ", ".join(["and the rain kept falling on the harbour roofs"] * 20) + "."
    by_clause = chunks(clauses)
    assert len(by_clause) > 1 and all(len(c) <= SPEECH_SEGMENT_CHARS for c in by_clause)
    assert all(c.endswith((",", ".")) for c in by_clause) and " ".join(by_clause) == clauses
    words = " ".join(["rain"] * 200)
    by_word = chunks(words)
    assert all(len(c) <= SPEECH_SEGMENT_CHARS and c.startswith("rain") and c.endswith("rain") for c in by_word)
    assert " ".join(by_word) == words
    solid = "x" * 1000
    assert chunks(solid) == ["x" * 400, "x" * 400, "x" * 200]


def test_cjk_splits_after_its_own_sentence_marks_without_spaces() -> None:
    text = "雨が降っている。" * 80  # 640 characters, no spaces
    found = chunks(text)
    assert len(found) == 2 and all(len(c) <= SPEECH_SEGMENT_CHARS and c.endswith("。") for c in found)
    assert "".join(found) == text
    long_clause = "、".join(["港の屋根に雨が降り続けていた"] * 40) + "。"
    assert "".join(chunks(long_clause)) == long_clause
    assert all(len(c) <= SPEECH_SEGMENT_CHARS for c in chunks(long_clause))


def test_long_dialogue_becomes_several_segments_of_the_same_kind_and_speaker() -> None:
    speech = '"' + " ".join(f"I said it {i} times, and I will say it again." for i in range(30)) + '" *She sighs.*'
    segments = speech_segments(speech, MIRA)
    assert [s.kind for s in segments[:-1]] == ["dialogue"] * (len(segments) - 1) and len(segments) > 3
    assert segments[-1].kind == "narration" and {s.speaker for s in segments} == {"Mira"}
    assert all(len(s.text) <= SPEECH_SEGMENT_CHARS for s in segments)


def test_a_conversation_reply_is_the_assistant_speaking_all_of_it() -> None:
    reply = 'Here is a title: "The Captain\'s Promise". It is *really* short.'
    assert parts(reply, voice_of(None), scene=False) == [
        ("dialogue", 'Here is a title: "The Captain\'s Promise". It is really short.')
    ]
    assert voice_of(None) == Voice("Assistant", None, ("Assistant",))


def test_a_continuation_is_read_in_the_markers_its_message_left_open() -> None:
    assert parts(' you doing tonight?" She smiles.', before='*looks up* "Hello, how are') == [
        ("dialogue", "you doing tonight?"),
        ("narration", "She smiles."),
    ]
    assert parts(" and wipes the bar.* Hi.", before="*She sighs") == [
        ("narration", "and wipes the bar."),
        ("dialogue", "Hi."),
    ]


def test_the_voice_and_speaker_come_from_the_profile() -> None:
    theo = Character(name="Theo Marlowe", nickname="Theo", voice=" tenor-3 ")
    assert voice_of(theo) == Voice("Theo Marlowe", "tenor-3", ("Theo Marlowe", "Theo", "Theo"))
    assert voice_of(Character(name="Orrin")).voice is None


def alnum(text: str) -> str:
    return "".join(char for char in text if char.isalnum())


def a_subsequence(part: str, whole: str) -> bool:
    rest = iter(whole)
    return all(char in rest for char in part)


MARKERS = set('*"“”«»„「」『』')


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.text(max_size=1500), st.booleans())
def test_any_text_gives_marker_free_segments_that_fit_of_its_own_words_in_order(text: str, scene: bool) -> None:
    segments = speech_segments(text, MIRA, scene=scene)
    for segment in segments:
        assert 1 <= len(segment.text) <= SPEECH_SEGMENT_CHARS and segment.text == segment.text.strip()
        assert alnum(segment.text) and (not scene or not MARKERS & set(segment.text))
    assert a_subsequence(alnum(" ".join(s.text for s in segments)), alnum(text))


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.text(alphabet='ab cD.,!?…\n*"“”«»„「」雨。', max_size=1500))
def test_text_without_markdown_labels_or_emoji_loses_no_word(text: str) -> None:
    segments = speech_segments(text, MIRA)
    assert alnum(" ".join(s.text for s in segments)) == alnum(text)
    assert all(len(s.text) <= SPEECH_SEGMENT_CHARS for s in segments)


def result(content: str, replies: list[GroupReply] | None = None) -> ChatResult:
    return ChatResult(
        job_id="j",
        content=content,
        finish_reason="stop",
        prompt_tokens=1,
        completion_tokens=1,
        attempts=1,
        returned_attempt=1,
        replies=replies or [],
    )


def job(**fields: object) -> ChatJob:
    return ChatJob.model_validate({"job_id": "j", "messages": [{"role": "user", "content": "hi"}], **fields})


def test_with_speech_fills_speech_only_when_the_job_asks() -> None:
    mira = Character(name="Mira", voice="alto-2")
    assert with_speech(job(), result('"Hi."'), [mira]).speech is None
    spoken = with_speech(job(speech=True), result('*nods* "Hi."'), [mira]).speech
    assert spoken == [
        SpeechSegment(speaker="Mira", kind="narration", text="nods", voice="alto-2"),
        SpeechSegment(speaker="Mira", kind="dialogue", text="Hi.", voice="alto-2"),
    ]
    assert with_speech(job(speech=True), result("***"), [mira]).speech == []


def test_a_groups_segments_follow_its_replies_each_in_its_members_voice() -> None:
    mira, bram = Character(name="Mira", voice="alto-2"), Character(name="Bram Holt", nickname="Bram")
    group_job = job(speech=True, characters=["Mira", bram.model_dump()])
    replies = [
        GroupReply(speaker="Mira", content='"Evening."', attempts=1),
        GroupReply(speaker="Bram Holt", content="Bram: *grunts* Evening.", attempts=1),
    ]
    spoken = with_speech(group_job, result('"Evening."', replies), [mira, bram]).speech
    assert [(s.speaker, s.kind, s.text, s.voice) for s in spoken or []] == [
        ("Mira", "dialogue", "Evening.", "alto-2"),
        ("Bram Holt", "narration", "grunts", None),
        ("Bram Holt", "dialogue", "Evening.", None),
    ]


def test_a_continue_jobs_speech_reads_the_continuation_in_its_messages_markers() -> None:
    continued = job(
        speech=True,
        mode="continue",
        character="Mira",
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\"Well, if it isn't"}],
    )
    spoken = with_speech(continued, result(' Tam." *She grins.*'), [Character(name="Mira")]).speech
    assert [(s.kind, s.text) for s in spoken or []] == [("dialogue", "Tam."), ("narration", "She grins.")]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"job_type": "chat_enhance"}, "job.speech: needs a job type whose reply is spoken"),
        ({"job_type": "chat_summarize"}, "job.speech: needs a job type whose reply is spoken"),
        (
            {
                "mode": "impersonate",
                "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
            },
            "job.speech: an impersonation is the user's message",
        ),
        ({"speech": "yes please"}, "job.speech: Input should be a valid boolean"),
    ],
)
def test_speech_is_refused_where_no_reply_is_spoken_naming_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError) as error:
        job(**{"speech": True, **fields})
    assert message in describe_validation_error(error.value, "job")


@pytest.mark.parametrize("job_type", ["chat_roleplay", "chat_conversation", "chat_unrestricted"])
def test_the_spoken_job_types_take_speech(job_type: str) -> None:
    assert job(speech=True, job_type=job_type).speech
