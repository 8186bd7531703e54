"""`python -m orchestrator characters …` and `chat --card` as scripts run them: real subprocesses.

The `import --json` contract is checked by scripts outside this suite: one JSON object on stdout and exit 0,
or exit 2 with an empty stdout and one `error:` line on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from characters import Character, bundled_character, bundled_characters
from orchestrator.cli import parser
from orchestrator.cli.chat import job_from_args
from orchestrator.errors import CliError
from orchestrator.settings import Settings
from tests.characters.cardfiles import REAL_CARDS, b64_json, json_card, png, png_card, v1, v2, v3
from tests.helpers import ROOT, arun, run, stack_env
from workflows.models import JobType, Message

TEXT_KEYS = (
    "name",
    "description",
    "personality",
    "scenario",
    "first_mes",
    "mes_example",
    "system_prompt",
    "post_history_instructions",
    "creator_notes",
    "creator",
    "character_version",
)
ENTRY_KEYS = ("keys", "secondary_keys", "content", "enabled", "insertion_order", "constant", "selective", "position")


def characters(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run("characters", *args)


def imported(path: Path) -> dict[str, object]:
    """The contract of a successful `import --json`: exit 0, one JSON object and nothing else."""
    done = characters("import", path, "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout.endswith("\n") and done.stdout.count("\n") == 1
    card = json.loads(done.stdout)
    assert isinstance(card, dict)
    for key in TEXT_KEYS:
        assert isinstance(card[key], str), key
    assert isinstance(card["alternate_greetings"], list) and isinstance(card["tags"], list)
    assert isinstance(card["extensions"], dict) and card["spec"] in ("v1", "v2", "v3")
    book = card["character_book"]
    assert book is None or all(set(ENTRY_KEYS) <= set(entry) for entry in book["entries"])
    return card


def refused(*args: str | Path) -> str:
    """The contract of a refused command: exit 2, nothing on stdout, one `error:` line on stderr."""
    done = characters(*args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    return done.stderr


def test_help_explains_the_commands() -> None:
    done = characters("--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for phrase in ("list", "show", "import", "export", "PNG", "chara", "ccv3", "--card"):
        assert phrase in text
    assert "--json" in characters("import", "--help").stdout


def test_real_seraphina_imports_with_her_book() -> None:
    card = imported(REAL_CARDS / "default_Seraphina.png")
    assert card["spec"] == "v2" and card["name"] == "Seraphina" and card["mes_example"] == ""
    assert "<START>" in card["description"] and card["extensions"]["world"] == "Eldoria"  # type: ignore[index]
    entries = card["character_book"]["entries"]  # type: ignore[index]
    assert len(entries) == 4 and entries[0]["keys"] == ["eldoria", "wood", "forest", "magical forest"]


def test_real_coding_sensei_and_flux_import() -> None:
    sensei = imported(REAL_CARDS / "default_CodingSensei.png")
    assert sensei["extensions"]["depth_prompt"] == {"prompt": "", "depth": 4, "role": "system"}  # type: ignore[index]
    flux = imported(REAL_CARDS / "default_FluxTheCat.png")
    assert flux["name"] == "Flux the Cat" and flux["character_book"] is None and flux["tags"] == []


def test_the_spec_is_the_format_actually_read(tmp_path: Path) -> None:
    cards = {
        "v1.json": json_card(v1("One")),
        "v2.png": png_card(chara=v2({"name": "Two"})),
        "both.png": png_card(chara=v2({"name": "Old"}), ccv3=v3({"name": "Three", "nickname": "Tri"})),
        "v3.json": json_card(v3({"name": "Three"})),
    }
    for file_name, data in cards.items():
        (tmp_path / file_name).write_bytes(data)
    assert imported(tmp_path / "v1.json")["spec"] == "v1"
    assert imported(tmp_path / "v2.png")["spec"] == "v2"
    both = imported(tmp_path / "both.png")
    assert (both["spec"], both["name"], both["nickname"]) == ("v3", "Three", "Tri")
    minimal = imported(tmp_path / "v3.json")  # every key present, with its empty value
    assert minimal["character_book"] is None and minimal["extensions"] == {} and minimal["tags"] == []
    assert all(minimal[key] == "" for key in TEXT_KEYS if key != "name")


@pytest.mark.parametrize(
    ("file_name", "data", "says"),
    [
        ("notes.txt", b"hello", "neither a PNG image nor a JSON file"),
        ("plain.png", png({}), "no 'chara' or 'ccv3' text chunk"),
        ("b64.png", png({"chara": "%%% not base64"}), "bad base64 in the PNG's 'chara' chunk"),
        ("json.png", png({"chara": "e25vdCBqc29u"}), "bad JSON in the PNG's 'chara' chunk"),
        ("bad.json", b'{"name": ', "bad JSON in the JSON file"),
        ("nameless.json", json_card(v2({"description": "x"})), "it has no name"),
        ("nameless.png", png({"ccv3": b64_json(v3({"name": ""}))}), "it has no name"),
    ],
)
def test_what_is_not_a_card_is_refused_in_one_line(tmp_path: Path, file_name: str, data: bytes, says: str) -> None:
    (tmp_path / file_name).write_bytes(data)
    error = refused("import", tmp_path / file_name, "--json")
    assert file_name in error and says in error


def test_a_missing_file_or_a_folder_is_refused_in_one_line(tmp_path: Path) -> None:
    assert "no such file" in refused("import", tmp_path / "gone.png", "--json")
    assert "is a directory" in refused("import", tmp_path, "--json")


def test_import_saves_nothing_and_prints_yaml_without_json(tmp_path: Path) -> None:
    (tmp_path / "card.json").write_bytes(json_card(v2({"name": "Orrin", "tags": ["sea"]})))
    done = characters("import", tmp_path / "card.json")
    assert done.returncode == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["card.json"]
    assert done.stdout.startswith("# read from ") and "a V2 card" in done.stdout.splitlines()[0]
    assert Character.model_validate(yaml.safe_load(done.stdout)) == Character(name="Orrin", tags=["sea"])


def test_list_has_one_line_per_bundled_profile() -> None:
    done = characters("list")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert len(lines) == len(bundled_characters())
    for line, character in zip(lines, bundled_characters().values(), strict=True):
        assert line.startswith(character.name + " ") and character.creator_notes[:40] in line


def test_show_prints_the_profile_as_yaml() -> None:
    done = characters("show", "mira")
    assert done.returncode == 0
    assert Character.model_validate(yaml.safe_load(done.stdout)) == bundled_character("Mira")
    assert "unknown character 'Nobody'; bundled characters: " in refused("show", "Nobody")


def test_export_then_import_gives_the_profile_back(tmp_path: Path) -> None:
    for card_format, file_name in (("v3-png", "mira.png"), ("v2-png", "mira2.png"), ("v2-json", "mira.json")):
        done = characters("export", "Mira", "--format", card_format, "-o", tmp_path / file_name)
        assert done.returncode == 0 and done.stdout.strip() == str(tmp_path / file_name), done.stderr
        card = imported(tmp_path / file_name)
        assert card["spec"] == card_format[:2]
        assert Character.model_validate({k: v for k, v in card.items() if k != "spec"}) == bundled_character("Mira")


def test_export_does_not_overwrite_without_force(tmp_path: Path) -> None:
    target = tmp_path / "mira.png"
    target.write_bytes(b"precious")
    assert "exists; use --force" in refused("export", "Mira", "-o", target)
    assert target.read_bytes() == b"precious"
    assert characters("export", "Mira", "-o", target, "--force").returncode == 0
    assert imported(target)["name"] == "Mira"


def test_export_into_an_avatar_and_by_default_name(tmp_path: Path) -> None:
    avatar = tmp_path / "avatar.png"
    avatar.write_bytes(png({}, size=(30, 40)))
    done = run(
        "characters",
        "export",
        "ilsa varga",
        "--image",
        avatar,
        cwd=tmp_path,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ilsa-varga.png"
    assert imported(tmp_path / "ilsa-varga.png")["nickname"] == "Captain Varga"
    assert "cannot read it" in refused("export", "Mira", "--image", tmp_path / "none.png", "-o", tmp_path / "x.png")


def test_characters_commands_do_not_load_temporal() -> None:
    card = REAL_CARDS / "default_Seraphina.png"
    probe = (
        "import sys\nfrom orchestrator.cli import main\n"
        f"codes = [main(['characters', 'list']), main(['characters', 'import', {str(card)!r}, '--json'])]\n"
        "print(codes, 'temporalio' in sys.modules, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stderr.strip().splitlines()[-1] == "[0, 0] False"


def chat_args(*args: str) -> object:
    return parser().parse_args(["chat", "--message", "Hello", *args])


def test_chat_card_puts_the_cards_profile_inline_in_the_job(tmp_path: Path) -> None:
    (tmp_path / "orrin.json").write_bytes(json_card(v2({"name": "Orrin", "first_mes": "Evening."})))
    hello = [Message(role="user", content="Hello")]
    job = job_from_args(chat_args("--card", str(tmp_path / "orrin.json")), hello)  # type: ignore[arg-type]
    assert job.character == Character(name="Orrin", first_mes="Evening.") and job.job_type is JobType.roleplay
    with pytest.raises(CliError, match=r"--card .*gone\.png: no such file") as error:
        job_from_args(chat_args("--card", str(tmp_path / "gone.png")), hello)  # type: ignore[arg-type]
    assert error.value.code == 2


def test_chat_takes_a_card_or_a_character_not_both() -> None:
    done = run("chat", "-m", "hi", "--character", "Mira", "--card", "x.png")
    assert done.returncode == 2 and "not allowed with argument" in done.stderr


async def test_chat_with_a_card_gets_a_real_reply(chat: object, settings: Settings, tmp_path: Path) -> None:
    card = tmp_path / "orrin.png"
    data = {"name": "Orrin", "description": "{{char}} keeps a lighthouse.", "personality": "patient, dry"}
    card.write_bytes(png_card(chara=v2(data)))
    done = await arun(
        "chat",
        "--card",
        str(card),
        "-m",
        "Is the lamp lit?",
        "--max-tokens",
        "30",
        "--seed",
        "3",
        env=stack_env(settings),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Orrin: ") and len(done.stdout.strip()) > len("Orrin: ")
