"""Unit tests of the pure stages with plain data: phone numbers (SPEC 6, R5) and the LDIF reader (RFC 2849)."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest

from adsync_plan.config import Block, Numbering, Scope
from adsync_plan.errors import InputError, SourceError
from adsync_plan.rules.numbers import NumberRules
from adsync_plan.sources import ldif
from adsync_plan.sources.ad import guid_string

RULES = NumberRules(Numbering(country="DE", trunk_prefix="0", blocks=(Block("+49702227978", ""),)))


@pytest.mark.parametrize("value", ["+49 (7022) 27978-30", "07022 2797830", "+49702227978 30", "+4970222797830"])
def test_spec_6_spellings_normalise_to_one_e164(value):
    parsed = RULES.parse(value)
    assert (parsed.kind, parsed.number) == ("external", "+4970222797830")


def test_short_digits_are_internal_and_garbage_is_invalid():
    assert RULES.parse("31").kind == "internal"
    assert RULES.parse("12-34").number == "1234"
    assert RULES.parse("not a number").kind == "invalid"
    assert RULES.parse("+49 1").kind == "invalid"


def test_spec_6_example_primary_from_external_and_other_internal():
    numbers = RULES.user_numbers(["+49 7022 27978-30", "31"], [])
    assert numbers.primary == "30"
    assert numbers.internal == ("30", "31")
    assert numbers.external == ("+4970222797830",)


def test_r7_numbers_outside_every_block_are_named_once_phones_and_faxes():
    numbers = RULES.user_numbers(["+49 30 1234567", "31", "+49 (30) 1234567"], ["+49 7022 27978-99", "+49 89 7654321"])
    assert numbers.outside == ("+49301234567", "+49897654321")  # once each; +4970222797899 is in the block
    assert numbers.primary == "31"  # the outside number gives none; the next value does
    assert RULES.user_numbers(["+49 7022 27978-30", "31"], []).outside == ()


def test_r7_without_configured_blocks_only_the_pbx_can_tell():
    rules = NumberRules(Numbering(country="DE"))
    assert rules.user_numbers(["+49 30 1234567", "31"], ["+49 89 7654321"]).outside == ()


def test_primary_comes_from_the_first_value_that_yields_one():
    numbers = RULES.user_numbers(["+49 30 1234567", "+49 7022 27978-44"], ["+49 7022 27978-99"])
    assert numbers.primary == "44"
    assert numbers.fax == ("+4970222797899",)
    assert numbers.external == ("+49301234567", "+4970222797844")


def test_derived_internal_uses_the_longest_matching_block():
    rules = NumberRules(Numbering(blocks=(Block("+4970", "9"), Block("+49702227978", "2"))))
    assert rules.derive_internal("+4970222797830") == "230"
    assert rules.derive_internal("+4989123") is None


def reference_user_numbers(rules: NumberRules, phones, faxes):
    """user_numbers spelled out with the public steps (parse, derive_internal, outside_blocks), as it was
    before it kept each value's derived number (issue 15)."""
    parsed = [rules.parse(v) for v in phones]
    faxed = [rules.parse(v) for v in faxes]
    primary = None
    for kind, number in parsed:
        if kind != "invalid":
            primary = primary or (number if kind == "internal" else rules.derive_internal(number))
    internal = {n for k, n in parsed if k == "internal"} | ({primary} if primary else set())
    fax = {n for k, n in faxed if k != "invalid"}
    external = tuple(sorted({n for k, n in parsed if k == "external"} - fax))
    invalid = tuple(v for v, (k, _) in zip([*phones, *faxes], [*parsed, *faxed], strict=True) if k == "invalid")
    return (primary, tuple(sorted(internal - fax)), external, tuple(sorted(fax)), invalid), rules.outside_blocks(
        (*external, *sorted(fax))
    )


@pytest.mark.parametrize("blocks", [(), (Block("+4970", "9"), Block("+49702227978", "2"))])
def test_user_numbers_equal_their_public_steps(blocks):
    rules = NumberRules(Numbering(country="DE", blocks=blocks))
    values = [
        "30",
        "+49702227978 30",
        "+4970222797830",
        "0711 555-1234",
        "+4971155512",
        "²7",
        "+49 (7022) 2797831",
        "12/34",
        "not a number",
        "+4930123456",
        "",
        "7022 27978-30",
        "\uff13\uff10",
    ]
    for n, phones in enumerate(zip(values, values[3:] + values[:3], strict=True)):
        faxes = (values[(n * 5) % len(values)],) if n % 2 else ()
        found = rules.user_numbers(phones, faxes)
        assert (tuple(found[:5]), found.outside) == reference_user_numbers(rules, phones, faxes), (phones, faxes)


@pytest.mark.parametrize("number", ["110", "112", "115", "116117", "11833", "1101", "199", "310", "700", "900"])
def test_r5_reserved_numbers(number):
    assert RULES.reserved_reason(number)


@pytest.mark.parametrize("number", ["10", "20", "111", "116", "101", "42"])
def test_r5_ordinary_numbers_are_allowed(number):
    assert RULES.reserved_reason(number) is None


def test_r5_trunk_prefix_and_configured_patterns():
    assert "trunk prefix" in RULES.reserved_reason("05")
    rules = NumberRules(Numbering(reserved_extra=("55x",)))
    assert rules.reserved_reason("551") and rules.reserved_reason("56") is None
    assert NumberRules(Numbering(country="FR")).reserved_reason("112")


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


GUID = uuid.UUID("5f0c1b7e-1234-4a5b-8c9d-0123456789ab")


def test_ldif_rfc2849_base64_continuation_comments_and_umlauts():
    text = (
        "version: 1\n"
        "# exported by ldifde\n"
        f"dn:: {b64('CN=Jürgen Müller,OU=Staff,DC=example,DC=com')}\n"
        "changetype: add\n"
        "objectClass: top\n"
        "objectClass: user\n"
        f"objectGUID:: {b64(GUID.bytes_le)}\n"
        f"givenName:: {b64('Jürgen')}\n"
        "sn: M\n"
        " üller\n"
        "telephoneNumber: +49 7022 27978-30\n"
        "otherTelephone: 31\n"
        "otherTelephone: 32\n"
        "\n"
        "dn: CN=Second,DC=example,DC=com\n"
        "cn: Second\n"
    )
    entries = list(ldif.parse_ldif(text))
    assert [dn for dn, _ in entries] == ["CN=Jürgen Müller,OU=Staff,DC=example,DC=com", "CN=Second,DC=example,DC=com"]
    entry = entries[0][1]
    assert entry["givenname"] == ["Jürgen"] and entry["sn"] == ["Müller"]
    assert entry["othertelephone"] == ["31", "32"]
    assert guid_string(entry["objectguid"][0]) == str(GUID)


def test_object_guid_is_the_string_windows_shows():
    # Windows shows the first three fields little-endian: bytes 7e 1b 0c 5f ... -> 5f0c1b7e-...
    assert guid_string(GUID.bytes_le) == "5f0c1b7e-1234-4a5b-8c9d-0123456789ab"
    assert guid_string("{5F0C1B7E-1234-4A5B-8C9D-0123456789AB}") == "5f0c1b7e-1234-4a5b-8c9d-0123456789ab"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("cn: no dn first\n", 1, "must start with 'dn:'"),
        ("dn: CN=a\nthis line has no colon\n", 2, "expected 'attribute: value'"),
        ("dn: CN=a\ncn:: !!notbase64!!\n", 2, "not valid base64"),
        ("dn: CN=a\njpegPhoto:< file:///etc/passwd\n", 2, "URL values"),
        ("dn: CN=a\nchangetype: delete\n", 2, "changetype"),
    ],
)
def test_malformed_ldif_names_the_line(text, line, words):
    with pytest.raises(InputError) as err:
        list(ldif.parse_ldif(text, "dir.ldif"))
    assert f"dir.ldif:{line}:" in str(err.value) and words in str(err.value)


def _user(n, groups=(), uac="512", **attrs):
    lines = [
        f"dn: CN=U{n},OU=Staff,DC=x",
        "objectClass: user",
        "objectClass: person",
        f"objectGUID: {uuid.UUID(int=n)}",
        f"userAccountControl: {uac}",
        f"sAMAccountName: u{n}",
    ]
    lines += [f"memberOf: {g}" for g in groups] + [f"{k}: {v}" for k, v in attrs.items()]
    return "\n".join(lines) + "\n"


def _group(name, members=(), member_of=()):
    lines = [f"dn: CN={name},OU=Groups,DC=x", "objectClass: group"]
    lines += [f"member: {m}" for m in members] + [f"memberOf: {g}" for g in member_of]
    return "\n".join(lines) + "\n"


def read(tmp_path: Path, text: str, nested=True):
    (tmp_path / "d.ldif").write_text(text, encoding="utf-8")
    scope = Scope(admin_groups=(), user_groups=("CN=Top,OU=Groups,DC=x",), nested_groups=nested)
    directory = ldif.read_directory({"type": "ldif", "path": "d.ldif"}, scope, {}, tmp_path)
    return {u.account: u for u in directory.users}


def test_ldif_nested_groups_through_member_and_member_of(tmp_path):
    text = "\n".join(
        [
            _group("Top", members=["CN=Mid,OU=Groups,DC=x"]),
            _group("Mid"),
            _group("Low", member_of=["CN=Mid, OU=Groups, DC=x"]),  # blanks after commas, as some exports write
            _user(1, groups=["CN=Low,OU=Groups,DC=x"]),
            _user(2),
        ]
    )
    users = read(tmp_path, text + "\n" + _group("Other", members=["CN=U2,OU=Staff,DC=x"]))
    assert "cn=top,ou=groups,dc=x" in users["u1"].groups  # Low < Mid < Top
    assert users["u2"].groups == {"cn=other,ou=groups,dc=x"}
    assert "cn=top,ou=groups,dc=x" not in read(tmp_path, text, nested=False)["u1"].groups


def test_ldif_mapping_ignores_other_phone_attributes_and_reads_disabled(tmp_path):
    text = _user(
        1,
        uac="514",
        telephoneNumber="30",
        otherTelephone="31",
        ipPhone="99",
        pager="98",
        mobile="97",
        homePhone="96",
        facsimileTelephoneNumber="+49 7022 27978-99",
        mail="a@b.c",
        givenName="A",
        sn="B",
    )
    user = read(tmp_path, text + "\n" + _group("Top"))["u1"]  # the scope group must be in the file
    assert user.phones == ("30", "31") and user.faxes == ("+49 7022 27978-99",)
    assert user.enabled is False
    assert (user.first_name, user.last_name, user.email) == ("A", "B", "a@b.c")


def test_ldif_group_cycles_end(tmp_path):
    text = "\n".join(
        [
            _group("Top", member_of=["CN=Mid,OU=Groups,DC=x"]),
            _group("Mid", member_of=["CN=Top,OU=Groups,DC=x"]),
            _user(1, groups=["CN=Mid,OU=Groups,DC=x"]),
        ]
    )
    assert "cn=top,ou=groups,dc=x" in read(tmp_path, text)["u1"].groups


def test_source_id_takes_the_first_configured_attribute_with_a_value():
    from adsync_plan.sources.ad import attribute_map, to_directory_user

    attrs = attribute_map({"source_id": ["employeeID", "objectGUID"]})
    with_id = to_directory_user("CN=a", {"employeeid": ["EMP0000000000042"], "objectguid": [GUID.bytes_le]}, attrs, ())
    without = to_directory_user("CN=b", {"objectguid": [GUID.bytes_le]}, attrs, ())
    # a 16-character text id stays text: only GUID attributes are read as 16 binary bytes
    assert with_id.source_id == "emp0000000000042"
    assert without.source_id == str(GUID)
    with pytest.raises(SourceError, match="has no employeeID/objectGUID"):
        to_directory_user("CN=c", {}, attrs, ())


def test_a_16_byte_text_id_from_ldap_bytes_is_not_taken_for_a_guid():
    from adsync_plan.sources.ad import attribute_map, to_directory_user

    attrs = attribute_map({"source_id": "employeeID"})
    user = to_directory_user("CN=a", {"employeeid": [b"EMP0000000000042"]}, attrs, ())
    assert user.source_id == "emp0000000000042"
