"""What list, show and rule commands print for an operator."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Cli
from tests.config.conftest import THUNDERBIRD

TB_CA = str(THUNDERBIRD / "TestCA.pem")


def columns_of(header: str, titles: list[str]) -> list[int]:
    """Return where each title starts in the header, checking their order."""
    starts = [header.index(title) for title in titles]
    assert starts == sorted(starts), header
    assert starts[0] == 0, header
    return starts


def assert_table(output: str, titles: list[str], rows: int) -> list[str]:
    """Check the header and that each cell starts under its column's title."""
    lines = output.rstrip("\n").split("\n")
    assert len(lines) == rows + 1, output
    starts = columns_of(lines[0], titles)
    for line in lines[1:]:
        for start in starts[1:]:
            assert line[start - 2 : start] == "  ", (start, line)
            assert line[start] != " ", (start, line)
    return lines


async def import_bob(smimegw: Cli, tmp_path: Path) -> str:
    password_file = tmp_path / "password"
    password_file.write_text("nss\n")
    assert (await smimegw("ca", "import", TB_CA)).status == 0
    created = await smimegw(
        "binding",
        "create",
        "internal",
        "bob@example.com",
        "--pkcs12",
        str(THUNDERBIRD / "Bob.p12"),
        "--password-file",
        str(password_file),
    )
    assert created.status == 0, created.err
    return created.out.split()[2]


async def test_certificate_lists_have_headers(smimegw: Cli, tmp_path: Path) -> None:
    binding_id = await import_bob(smimegw, tmp_path)
    password_file = tmp_path / "password"
    cert = await smimegw(
        "cert",
        "import",
        "gateway",
        "--pkcs12",
        str(THUNDERBIRD / "Alice.p12"),
        "--password-file",
        str(password_file),
    )
    assert cert.status == 0, cert.err

    cas = await smimegw("ca", "list")
    assert_table(cas.out, ["ID", "STATUS", "VALID TO", "IN USE", "SUBJECT"], 1)
    assert "  yes  " in cas.out
    certs = await smimegw("cert", "list")
    assert_table(certs.out, ["NAME", "STATUS", "VALID TO", "IN USE", "IDENTITY"], 1)
    bindings = await smimegw("binding", "list")
    lines = assert_table(
        bindings.out,
        ["ID", "TYPE", "PATTERN", "STATUS", "VALID TO", "IDENTITY"],
        1,
    )
    assert lines[1].startswith(binding_id)
    history = await smimegw("config", "history")
    assert_table(history.out, ["SEQUENCE", "TIME", "TYPE"], 3)


async def test_json_lists_stay_json(smimegw: Cli, tmp_path: Path) -> None:
    binding_id = await import_bob(smimegw, tmp_path)
    listed = await smimegw("binding", "list", "--json")
    [entry] = json.loads(listed.out)
    assert entry["id"] == binding_id
    assert entry["in_use"] is False
    shown = await smimegw("binding", "show", binding_id, "--json")
    assert json.loads(shown.out)["reason"] is None


async def test_binding_show_plain_values(smimegw: Cli, tmp_path: Path) -> None:
    binding_id = await import_bob(smimegw, tmp_path)
    shown = await smimegw("binding", "show", binding_id)
    assert shown.status == 0, shown.err
    lines = shown.out.rstrip("\n").split("\n")
    fields = {}
    for line in lines:
        label, _, value = line.partition(":")
        fields[label] = value.strip()
    assert fields["id"] == binding_id
    assert fields["addresses"] == "Bob@example.com"
    assert fields["reason"] == "-"
    assert fields["local cert"] == "-"
    assert fields["in use"] == "no"
    assert fields["warnings"] == "-"
    assert fields["valid from"].startswith("20")
    assert "None" not in shown.out
    assert "[" not in shown.out
    # Every value starts in the same column.
    value_columns = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in lines}
    assert len(value_columns) == 1, shown.out


async def test_profile_and_rule_lists(smimegw: Cli) -> None:
    created = await smimegw(
        "profile", "create", "partners", "--action", "sign-and-encrypt"
    )
    assert created.status == 0, created.err
    for recipient in ("@partner.example", "carol@other.example"):
        rule = await smimegw(
            "rule", "create", "--profile", "partners", "--recipient", recipient
        )
        assert rule.status == 0, rule.err
    profiles = await smimegw("profile", "list")
    assert_table(
        profiles.out,
        ["NAME", "ACTION", "ALGORITHM", "DIGEST", "ON FAILURE", "IN USE"],
        1,
    )
    rules = await smimegw("rule", "list")
    lines = assert_table(
        rules.out,
        ["POSITION", "ID", "PROFILE", "SENDER", "RECIPIENT", "CLIENT IP"],
        2,
    )
    assert "@partner.example" in lines[1]


async def test_rule_move_past_end(smimegw: Cli) -> None:
    await smimegw("profile", "create", "partners", "--action", "encrypt")
    ids = []
    for recipient in ("@a.example", "@b.example", "@c.example"):
        created = await smimegw(
            "rule", "create", "--profile", "partners", "--recipient", recipient
        )
        assert created.out.endswith(f"at position {len(ids) + 1} of {len(ids) + 1}\n")
        ids.append(created.out.split()[2])

    moved = await smimegw("rule", "move", ids[0], "--position", "9")
    assert moved.status == 0, moved.err
    assert "to position 3 of 3" in moved.out
    assert "position 9 is past the end" in moved.out
    listed = await smimegw("rule", "list", "--json")
    assert [r["id"] for r in json.loads(listed.out)] == [ids[1], ids[2], ids[0]]

    moved = await smimegw("rule", "move", ids[0], "--position", "1")
    assert moved.out == f"moved rule {ids[0]} to position 1 of 3\n"

    created = await smimegw(
        "rule", "create", "--profile", "partners", "--position", "7"
    )
    assert "at position 4 of 4" in created.out
    assert "position 7 is past the end" in created.out
