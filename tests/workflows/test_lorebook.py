from characters.profile import BookEntry, CharacterBook
from workflows.lorebook import DEFAULT_SCAN_DEPTH, KeyIndex, entry_depth, entry_label, entry_text, triggered_entries
from workflows.models import Message


def said(*texts: str) -> list[Message]:
    return [Message(role="user" if i % 2 == 0 else "assistant", content=t) for i, t in enumerate(texts)]


def fired(book: CharacterBook, messages: list[Message]) -> list[str]:
    return [entry.content for _, entry in triggered_entries(book, messages)]


def test_keys_match_case_insensitively_in_recent_messages() -> None:
    book = CharacterBook(entries=[BookEntry(keys=["Eldoria"], content="E"), BookEntry(keys=["moon"], content="M")])
    assert fired(book, said("Tell me about ELDORIA.")) == ["E"]
    assert fired(book, said("nothing here")) == []


def test_case_sensitive_entries_match_exactly() -> None:
    book = CharacterBook(entries=[BookEntry(keys=["Ash"], content="A", case_sensitive=True)])
    assert fired(book, said("the ash falls")) == [] and fired(book, said("Ash falls")) == ["A"]


def test_only_the_last_scan_depth_messages_are_scanned() -> None:
    book = CharacterBook(entries=[BookEntry(keys=["dragon"], content="D")], scan_depth=2)
    assert fired(book, said("a dragon!", "hm", "so")) == []
    assert fired(book, said("hm", "a dragon!", "so")) == ["D"]
    default = CharacterBook(entries=[BookEntry(keys=["dragon"], content="D")])
    old = said("a dragon!", *["x"] * DEFAULT_SCAN_DEPTH)
    assert fired(default, old) == [] and fired(default, old[:DEFAULT_SCAN_DEPTH]) == ["D"]


def test_selective_entries_need_a_secondary_key_too() -> None:
    book = CharacterBook(entries=[BookEntry(keys=["forest"], secondary_keys=["night"], selective=True, content="F")])
    assert fired(book, said("the forest")) == [] and fired(book, said("the forest at night")) == ["F"]
    plain = CharacterBook(entries=[BookEntry(keys=["forest"], secondary_keys=["night"], content="F")])
    assert fired(plain, said("the forest")) == ["F"]


def test_constant_always_and_disabled_never() -> None:
    book = CharacterBook(
        entries=[
            BookEntry(keys=[], constant=True, content="C"),
            BookEntry(keys=["x"], constant=True, enabled=False, content="OFF"),
        ]
    )
    assert fired(book, said("anything")) == ["C"]


def test_entries_come_in_insertion_order_and_have_labels() -> None:
    book = CharacterBook(
        entries=[
            BookEntry(keys=["a"], content="second", insertion_order=5, id=7),
            BookEntry(keys=["a"], content="first", insertion_order=1, comment="Intro"),
        ]
    )
    assert fired(book, said("a")) == ["first", "second"]
    labels = [entry_label(entry, index) for index, entry in triggered_entries(book, said("a"))]
    assert labels == ["Intro", "7"]


def test_depth_is_the_v3_decorator_else_the_v2_extension_else_4_and_decorators_are_not_text() -> None:
    v3 = BookEntry(keys=["a"], content="@@depth 7\n@@role system\nThe lamp is dark.", extensions={"depth": 2})
    assert entry_depth(v3) == 7 and entry_text(v3) == "The lamp is dark."
    assert entry_depth(BookEntry(keys=["a"], content="x", extensions={"depth": 2})) == 2
    assert entry_depth(BookEntry(keys=["a"], content="x", extensions={"depth": "deep"})) == 4
    assert entry_text(BookEntry(content="Plain.\n@@depth 1")) == "Plain.\n@@depth 1"  # only leading lines


def test_the_key_index_names_the_messages_holding_a_key_as_a_scan_would() -> None:
    book = CharacterBook(
        entries=[
            BookEntry(keys=["Eldoria"], content="E"),
            BookEntry(keys=["Ash"], content="A", case_sensitive=True),
            BookEntry(keys=["x"], secondary_keys=["moon"], selective=True, content="M"),
        ]
    )
    texts = ["in ELDORIA", "the ash", "Ash and the moon", "nothing"]
    index = KeyIndex(book, texts)
    assert [index.messages_holding(i) for i in range(3)] == [{0}, {2}, {2}]
