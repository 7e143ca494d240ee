"""Conformance of the LDIF reader to RFC 2849: the RFC's own examples, then one case (or a few) per rule of
its grammar and per note, valid and invalid. Every invalid case is an InputError naming the file and line.

The examples are written out from the RFC's text. Three slips of the published text are corrected here, as
every LDIF implementation reads them: the continuation lines of example 3 and the folded comment of example 4
lost their leading space, and example 5 has an empty line inside its record (a page break). Example 3 as
printed is also checked: it is refused, at the first unfolded line.
"""

from __future__ import annotations

import pytest

from adsync_plan.errors import InputError
from adsync_plan.sources.ldif import Binary, parse_ldif

FILE = "rfc.ldif"


def parse(text: str) -> list[tuple[str, dict]]:
    return list(parse_ldif(text, FILE))


def refused(text: str, line: int, *words: str) -> str:
    with pytest.raises(InputError) as err:
        parse(text)
    message = str(err.value)
    assert message.startswith(f"{FILE}:{line}: "), message
    for word in words:
        assert word in message, message
    assert "\n" not in message
    return message


# --- the examples of RFC 2849, section "Examples of LDAP Data Interchange Format" ----------------------------

EXAMPLE_1 = """\
version: 1
dn: cn=Barbara Jensen, ou=Product Development, dc=airius, dc=com
objectclass: top
objectclass: person
objectclass: organizationalPerson
cn: Barbara Jensen
cn: Barbara J Jensen
cn: Babs Jensen
sn: Jensen
uid: bjensen
telephonenumber: +1 408 555 1212
description: A big sailing fan.

dn: cn=Bjorn Jensen, ou=Accounting, dc=airius, dc=com
objectclass: top
objectclass: person
objectclass: organizationalPerson
cn: Bjorn Jensen
sn: Jensen
telephonenumber: +1 408 555 1212
"""

EXAMPLE_2 = """\
version: 1
dn:cn=Barbara Jensen, ou=Product Development, dc=airius, dc=com
objectclass:top
objectclass:person
objectclass:organizationalPerson
cn:Barbara Jensen
cn:Barbara J Jensen
cn:Babs Jensen
sn:Jensen
uid:bjensen
telephonenumber:+1 408 555 1212
description:Babs is a big sailing fan, and travels extensively in sea
 rch of perfect sailing conditions.
title:Product Manager, Rod and Reel Division
"""

EXAMPLE_3_LINES = [
    "version: 1",
    "dn: cn=Gern Jensen, ou=Product Testing, dc=airius, dc=com",
    "objectclass: top",
    "objectclass: person",
    "objectclass: organizationalPerson",
    "cn: Gern Jensen",
    "cn: Gern O Jensen",
    "sn: Jensen",
    "uid: gernj",
    "telephonenumber: +1 408 555 1212",
    "description:: V2hhdCBhIGNhcmVmdWwgcmVhZGVyIHlvdSBhcmUhICBUaGlzIHZhbHVl",
    "IGlzIGJhc2UtNjQtZW5jb2RlZCBiZWNhdXNlIGl0IGhhcyBhIGNvbnRyb2wgY2hhcmFjdG",
    "VyIGluIGl0IChhIENSKS4NICBCeSB0aGUgd2F5LCB5b3Ugc2hvdWxkIHJlYWxseSBnZXQg",
    "b3V0IG1vcmUu",
]
EXAMPLE_3_AS_PRINTED = "\n".join(EXAMPLE_3_LINES) + "\n"
EXAMPLE_3 = "\n".join(EXAMPLE_3_LINES[:11] + [" " + line for line in EXAMPLE_3_LINES[11:]]) + "\n"

EXAMPLE_4 = """\
version: 1
dn:: b3U95Za25qWt6YOoLG89QWlyaXVz
# dn:: ou=<JapaneseOU>,o=Airius
objectclass: top
objectclass: organizationalUnit
ou:: 5Za25qWt6YOo
# ou:: <JapaneseOU>
ou;lang-ja:: 5Za25qWt6YOo
# ou;lang-ja:: <JapaneseOU>
ou;lang-ja;phonetic:: 44GI44GE44GO44KH44GG44G2
# ou;lang-ja:: <JapaneseOU_in_phonetic_representation>
ou;lang-en: Sales
description: Japanese office

dn:: dWlkPXJvZ2FzYXdhcmEsb3U95Za25qWt6YOoLG89QWlyaXVz
# dn:: uid=<uid>,ou=<JapaneseOU>,o=Airius
userpassword: {SHA}O3HSv1MusyL4kTjP+HKI5uxuNoM=
objectclass: top
objectclass: person
objectclass: organizationalPerson
objectclass: inetOrgPerson
uid: rogasawara
mail: rogasawara@airius.co.jp
givenname;lang-ja:: 44Ot44OJ44OL44O8
# givenname;lang-ja:: <JapaneseGivenname>
sn;lang-ja:: 5bCP56yg5Y6f
# sn;lang-ja:: <JapaneseSn>
cn;lang-ja:: 5bCP56yg5Y6fIOODreODieODi+ODvA==
# cn;lang-ja:: <JapaneseCn>
title;lang-ja:: 5Za25qWt6YOoIOmDqOmVtw==
# title;lang-ja:: <JapaneseTitle>
preferredlanguage: ja
givenname:: 44Ot44OJ44OL44O8
# givenname:: <JapaneseGivenname>
sn:: 5bCP56yg5Y6f
# sn:: <JapaneseSn>
cn:: 5bCP56yg5Y6fIOODreODieODi+ODvA==
# cn:: <JapaneseCn>
title:: 5Za25qWt6YOoIOmDqOmVtw==
# title:: <JapaneseTitle>
givenname;lang-ja;phonetic:: 44KN44Gp44Gr44O8
# givenname;lang-ja;phonetic::
 <JapaneseGivenname_in_phonetic_representation_kana>
sn;lang-ja;phonetic:: 44GK44GM44GV44KP44KJ
# sn;lang-ja;phonetic:: <JapaneseSn_in_phonetic_representation_kana>
cn;lang-ja;phonetic:: 44GK44GM44GV44KP44KJIOOCjeOBqeOBq+ODvA==
# cn;lang-ja;phonetic:: <JapaneseCn_in_phonetic_representation_kana>
title;lang-ja;phonetic:: 44GI44GE44GO44KH44GG44G2IOOBtuOBoeOCh+OBhg==
# title;lang-ja;phonetic::
# <JapaneseTitle_in_phonetic_representation_kana>
givenname;lang-en: Rodney
sn;lang-en: Ogasawara
cn;lang-en: Rodney Ogasawara
title;lang-en: Sales, Director
"""

EXAMPLE_5 = """\
version: 1
dn: cn=Horatio Jensen, ou=Product Testing, dc=airius, dc=com
objectclass: top
objectclass: person
objectclass: organizationalPerson
cn: Horatio Jensen
cn: Horatio N Jensen
sn: Jensen
uid: hjensen
telephonenumber: +1 408 555 1212
jpegphoto:< file:///usr/local/directory/photos/hjensen.jpg
"""

EXAMPLE_6 = """\
version: 1
# Add a new entry
dn: cn=Fiona Jensen, ou=Marketing, dc=airius, dc=com
changetype: add
objectclass: top
objectclass: person
objectclass: organizationalPerson
cn: Fiona Jensen
sn: Jensen
uid: fiona
telephonenumber: +1 408 555 1212
jpegphoto:< file:///usr/local/directory/photos/fiona.jpg

# Delete an existing entry
dn: cn=Robert Jensen, ou=Marketing, dc=airius, dc=com
changetype: delete

# Modify an entry's relative distinguished name
dn: cn=Paul Jensen, ou=Product Development, dc=airius, dc=com
changetype: modrdn
newrdn: cn=Paula Jensen
deleteoldrdn: 1
"""

EXAMPLE_7 = """\
version: 1
# Delete an entry. The operation will attach the LDAPv3
# Tree Delete Control defined in [9]. The criticality
# field is "true" and the controlValue field is
# absent, as required by [9].
dn: ou=Product Development, dc=airius, dc=com
control: 1.2.840.113556.1.4.805 true
changetype: delete
"""


def test_example_1_two_entries():
    assert parse(EXAMPLE_1) == [
        (
            "cn=Barbara Jensen, ou=Product Development, dc=airius, dc=com",
            {
                "objectclass": ["top", "person", "organizationalPerson"],
                "cn": ["Barbara Jensen", "Barbara J Jensen", "Babs Jensen"],
                "sn": ["Jensen"],
                "uid": ["bjensen"],
                "telephonenumber": ["+1 408 555 1212"],
                "description": ["A big sailing fan."],
            },
        ),
        (
            "cn=Bjorn Jensen, ou=Accounting, dc=airius, dc=com",
            {
                "objectclass": ["top", "person", "organizationalPerson"],
                "cn": ["Bjorn Jensen"],
                "sn": ["Jensen"],
                "telephonenumber": ["+1 408 555 1212"],
            },
        ),
    ]


def test_example_2_folded_value_and_no_space_after_the_colon():
    [(dn, entry)] = parse(EXAMPLE_2)
    assert dn == "cn=Barbara Jensen, ou=Product Development, dc=airius, dc=com"
    assert entry["description"] == [
        "Babs is a big sailing fan, and travels extensively in search of perfect sailing conditions."
    ]
    assert entry["title"] == ["Product Manager, Rod and Reel Division"]
    assert entry["objectclass"] == ["top", "person", "organizationalPerson"]


def test_example_3_folded_base64_value_with_a_cr():
    [(_, entry)] = parse(EXAMPLE_3)
    assert entry["description"] == [
        "What a careful reader you are!  This value is base-64-encoded because it has a control character in "
        "it (a CR).\r  By the way, you should really get out more."
    ]


def test_example_3_as_printed_without_the_folding_spaces_is_refused_at_its_first_unfolded_line():
    refused(EXAMPLE_3_AS_PRINTED, 12, "expected 'attribute: value'", "IGlzIGJhc2Ut")


def test_example_4_utf8_values_language_options_and_comments_including_a_folded_one():
    [(ou_dn, ou), (person_dn, person)] = parse(EXAMPLE_4)
    assert ou_dn == "ou=営業部,o=Airius"
    assert ou == {
        "objectclass": ["top", "organizationalUnit"],
        "ou": ["営業部", "営業部", "えいぎょうぶ", "Sales"],  # options are subtypes: read with the attribute
        "description": ["Japanese office"],
    }
    assert person_dn == "uid=rogasawara,ou=営業部,o=Airius"
    assert person["sn"] == ["小笠原", "小笠原", "おがさわら", "Ogasawara"]
    assert person["givenname"] == ["ロドニー", "ロドニー", "ろどにー", "Rodney"]
    assert person["cn"] == ["小笠原 ロドニー", "小笠原 ロドニー", "おがさわら ろどにー", "Rodney Ogasawara"]
    assert person["title"] == ["営業部 部長", "営業部 部長", "えいぎょうぶ ぶちょう", "Sales, Director"]
    assert person["userpassword"] == ["{SHA}O3HSv1MusyL4kTjP+HKI5uxuNoM="]
    assert person["preferredlanguage"] == ["ja"]
    assert not any(key.startswith(("#", "<", " ")) for key in person)  # every comment line was dropped


def test_example_5_a_url_value_is_refused_for_safety():
    refused(EXAMPLE_5, 11, "jpegphoto", "URL values", "jpegphoto::")


def test_example_6_change_records_other_than_add_are_refused():
    refused(EXAMPLE_6, 12, "URL values")  # the add record's jpegphoto comes first
    without_url = EXAMPLE_6.replace("jpegphoto:< file:///usr/local/directory/photos/fiona.jpg\n", "")
    refused(without_url, 15, "changetype: delete", "export of entries")


def test_example_7_control_then_a_delete_is_refused_at_the_changetype():
    refused(EXAMPLE_7, 8, "changetype: delete")


# --- ldif-file, version-spec, note 1 --------------------------------------------------------------------------

ENTRY = "dn: cn=a,dc=x\ncn: a\n"


def test_version_1_with_or_without_fill():
    assert parse("version: 1\n\n" + ENTRY) == parse("version:1\n" + ENTRY) == parse("version:    1\n" + ENTRY)


def test_version_may_be_absent():
    assert parse(ENTRY) == [("cn=a,dc=x", {"cn": ["a"]})]


@pytest.mark.parametrize("version", ["2", "0", "1.0", "one", ""])
def test_other_versions_are_refused(version):
    refused(f"version: {version}\n\n{ENTRY}", 1, "version")


def test_version_only_at_the_start_of_the_file():
    refused(f"{ENTRY}\nversion: 1\n", 4, "must start with 'dn:'", "'version'")


def test_a_version_line_inside_a_record_is_an_attribute_named_version():
    assert parse("dn: cn=a\nversion: 7\n") == [("cn=a", {"version": ["7"]})]


def test_a_file_of_only_a_version_or_only_comments_or_nothing_has_no_records():
    assert parse("version: 1\n") == parse("# nothing\n") == parse("") == parse("\n\n\n") == []


# --- ldif-content: 1*(1*SEP ldif-attrval-record) --------------------------------------------------------------


def test_records_are_separated_by_one_or_more_empty_lines():
    two = ENTRY + "\n\n\n" + ENTRY.replace("a", "b")
    assert [dn for dn, _ in parse(two)] == ["cn=a,dc=x", "cn=b,dc=x"]


def test_empty_lines_and_comments_around_the_records():
    text = "\n\n# before the version\n\nversion: 1\n\n\n# before\n" + ENTRY + "\n# between\n\n" + ENTRY + "\n\n"
    assert len(parse(text)) == 2


def test_the_last_line_needs_no_line_separator():
    assert parse(ENTRY.rstrip("\n")) == parse(ENTRY)


# --- ldif-attrval-record = dn-spec SEP 1*attrval-spec --------------------------------------------------------


def test_a_record_must_start_with_dn():
    refused("cn: a\ndn: cn=a\n", 1, "must start with 'dn:'", "'cn'")


def test_a_second_dn_without_an_empty_line_is_refused():
    refused(ENTRY + ENTRY.replace("a", "b"), 3, "a second 'dn:'", "line 1", "empty line")


def test_a_line_of_spaces_is_no_record_separator():
    refused(ENTRY + "  \n" + ENTRY.replace("a", "b"), 4, "a second 'dn:'")


def test_a_record_needs_at_least_one_attribute():
    refused("dn: cn=a\n\n" + ENTRY, 1, "has no attributes")


# --- dn-spec, distinguishedName, base64-distinguishedName ----------------------------------------------------


def test_dn_plain_with_any_fill_and_base64():
    assert parse("dn:cn=a\ncn: a\n")[0][0] == "cn=a"
    assert parse("dn:    cn=a\ncn: a\n")[0][0] == "cn=a"
    assert parse("dn:: Y249TcO8bGxlcg==\ncn: a\n")[0][0] == "cn=Müller"
    assert parse("dn::Y249YQ==\ncn: a\n")[0][0] == "cn=a"
    assert parse("DN: cn=a\ncn: a\n")[0][0] == "cn=a"  # ABNF strings are case-insensitive


def test_an_empty_dn_is_a_dn():
    assert parse("dn:\ncn: root\n") == [("", {"cn": ["root"]})]


def test_a_base64_dn_must_be_utf8():
    refused("dn:: gA==\ncn: a\n", 1, "dn:", "not UTF-8")


def test_a_dn_is_no_url():
    refused("dn:< file:///etc/passwd\ncn: a\n", 1, "URL")


def test_dn_with_an_option_is_not_a_dn_spec():
    refused("dn;x: cn=a\ncn: a\n", 1, "must start with 'dn:'")


# --- attrval-spec = AttributeDescription value-spec SEP ------------------------------------------------------


def test_a_line_without_a_colon_is_refused():
    refused("dn: cn=a\ncn: a\nno colon here\n", 3, "expected 'attribute: value'", "no colon here")


@pytest.mark.parametrize(
    ("description", "key"),
    [
        ("cn", "cn"),
        ("CN", "cn"),
        ("msDS-cloudExtensionAttribute1", "msds-cloudextensionattribute1"),
        ("cn;lang-en", "cn"),
        ("userCertificate;binary", "usercertificate"),
        ("sn;lang-ja;phonetic", "sn"),
        ("2.5.4.3", "2.5.4.3"),
        ("2.5.4.3;x-tag", "2.5.4.3"),
        ("0", "0"),
    ],
)
def test_attribute_descriptions(description, key):
    assert parse(f"dn: cn=a\n{description}: v\n") == [("cn=a", {key: ["v"]})]


@pytest.mark.parametrize(
    "description", ["given_name", "1cn", "-cn", "cn;", "cn;lang_en", ";x", "2.5.", "2..5", "c n", "", "sn\t", "Müller"]
)
def test_what_is_no_attribute_description(description):
    refused(f"dn: cn=a\ncn: a\n{description}: v\n", 3, "not an attribute description")


# --- value-spec: ":" FILL SAFE-STRING / "::" FILL BASE64-STRING / ":<" FILL url ------------------------------


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("sn: Foo", "Foo"),
        ("sn:Foo", "Foo"),
        ("sn:   Foo", "Foo"),  # FILL is any number of spaces
        ("sn: Foo  ", "Foo  "),  # note 8: trailing spaces SHOULD be base64, but belong to the value
        ("sn: a:b<c", "a:b<c"),
        ("sn:", ""),  # note 5: a zero-length value
        ("sn:   ", ""),
        ("sn:: Rm9v", "Foo"),
        ("sn::Rm9v", "Foo"),
        ("sn::    Rm9v", "Foo"),
        ("sn::", ""),
        ("sn:: ", ""),
        ("sn:: IEZvbyA=", " Foo "),
        ("sn: Ströder", "Ströder"),  # UTF-8 without base64: not RFC 2849, read as OpenLDAP does
        ("sn: \tTab", "\tTab"),  # SAFE-CHAR includes the other control characters
    ],
)
def test_values(line, value):
    assert parse(f"dn: cn=a\n{line}\n")[0][1]["sn"] == [value]


@pytest.mark.parametrize(
    "encoded",
    ["###", "Rm9", "Rm9v=", "Rm 9v", "Rm9v ", "=Rm9v", "Rm9v==Rm9v", "Zm9v\u00e9", "Zg"],
)
def test_invalid_base64_is_refused(encoded):
    refused(f"dn: cn=a\nsn:: {encoded}\n", 2, "the base64 value of sn is not valid base64")


def test_base64_that_is_not_utf8_is_kept_as_bytes_with_its_line():
    [(_, entry)] = parse("dn: cn=a\ncn: a\nobjectSid:: AQUAAAAAAAUVAAAA/w==\n")
    [sid] = entry["objectsid"]
    assert isinstance(sid, Binary) and sid == b"\x01\x05\0\0\0\0\0\x05\x15\0\0\0\xff" and sid.line == 3


def test_guid_attributes_stay_bytes_even_when_they_happen_to_be_utf8():
    [(_, entry)] = parse("dn: cn=a\nobjectGUID:: QUFBQUFBQUFBQUFBQUFBQQ==\n")
    assert entry["objectguid"] == [b"A" * 16]


def test_a_value_with_nul_lf_cr_in_base64_is_text():
    assert parse("dn: cn=a\nsn:: CQAKOiVA\n")[0][1]["sn"] == ["\t\0\n:%@"]


def test_a_url_value_is_refused():
    refused("dn: cn=a\ncn: a\njpegPhoto:< file:///etc/shadow\n", 3, "jpegPhoto", "URL values")


# --- SEP = CR LF / LF, SAFE-CHAR --------------------------------------------------------------------------------


def test_crlf_and_lf_read_the_same():
    text = EXAMPLE_4 + "\n" + EXAMPLE_3.replace("version: 1\n", "")
    assert parse(text.replace("\n", "\r\n")) == parse(text)


def test_a_cr_inside_a_line_is_refused():
    refused("dn: cn=a\r\nsn: a\rb\r\n", 2, "sn: ", "carriage return")


def test_a_nul_inside_a_line_is_refused():
    refused("dn: cn=a\ncn: a\nsn: a\0b\n", 3, "sn: ", "NUL")


# --- note 2: folding ------------------------------------------------------------------------------------------


def test_folding_removes_exactly_one_space():
    text = "dn: cn=a\ndescription: very\n  long\n   line\n folded\n"
    assert parse(text)[0][1]["description"] == ["very long  linefolded"]


def test_any_line_may_be_folded_the_dn_a_name_and_a_base64_value():
    text = "d\n n: cn=a,\n dc=x\ntelephone\n Number: 1\nsn:: Rm\n 9v\n"
    assert parse(text) == [("cn=a,dc=x", {"telephonenumber": ["1"], "sn": ["Foo"]})]


def test_a_folded_comment_is_one_comment():
    text = "# a comment\n that goes on\n and on\ndn: cn=a\n# inside\n too\ncn: a\n"
    assert parse(text) == [("cn=a", {"cn": ["a"]})]


def test_a_continuation_line_that_starts_with_a_hash_is_no_comment():
    assert parse("dn: cn=a\ncn: a\n #b\n")[0][1]["cn"] == ["a#b"]


def test_a_continuation_after_an_empty_line_is_refused():
    refused(ENTRY + "\n continued\n", 4, "begins with a space", "empty line")


def test_a_continuation_at_the_start_of_the_file_is_refused():
    refused(" dn: cn=a\ncn: a\n", 1, "begins with a space")
    refused("\n dn: cn=a\ncn: a\n", 2, "begins with a space")


def test_lines_are_counted_through_folds_and_comments():
    text = "version: 1\n# c\n c\n\ndn: cn=a,\n dc=x\n# c\ncn: a\n b\n\nbroken\n"
    refused(text, 11, "expected 'attribute: value'")
    text = "dn: cn=a,\n dc=x\n# c\n more\ncn: a\n b\nbroken line\n"
    refused(text, 7, "expected 'attribute: value'")


# --- note 3: comments ------------------------------------------------------------------------------------------


def test_comments_anywhere_are_ignored():
    text = "# top\nversion: 1\n# after version\ndn: cn=a\n# in a record\ncn: a\n# at the end\n"
    assert parse(text) == [("cn=a", {"cn": ["a"]})]


def test_a_hash_inside_a_value_is_no_comment():
    assert parse("dn: cn=a\ncn: a # b\n")[0][1]["cn"] == ["a # b"]


# --- changerecord: change-add, control -------------------------------------------------------------------------


def test_changetype_add_describes_an_entry():
    plain = parse(ENTRY)
    assert parse("dn: cn=a,dc=x\nchangetype: add\ncn: a\n") == plain
    assert parse("dn: cn=a,dc=x\nchangetype:ADD\ncn: a\n") == plain
    assert parse("dn: cn=a,dc=x\ncontrol: 1.2.840.113556.1.4.805 true\nchangetype: add\ncn: a\n") == plain
    assert parse("dn: cn=a,dc=x\ncontrol: 1.2.3\ncontrol: 1.2.4 false: x\nchangetype: add\ncn: a\n") == plain


@pytest.mark.parametrize("change", ["delete", "modify", "modrdn", "moddn", "replace"])
def test_other_change_records_are_refused(change):
    refused(f"dn: cn=a\nchangetype: {change}\n", 2, f"changetype: {change}")


def test_changetype_add_needs_attributes():
    refused("dn: cn=a\nchangetype: add\n", 1, "has no attributes")


def test_a_malformed_control_is_refused():
    refused("dn: cn=a\ncontrol: not-an-oid\nchangetype: add\ncn: a\n", 2, "control:")


def test_without_a_changetype_control_is_an_attribute():
    assert parse("dn: cn=a\ncontrol: anything\n") == [("cn=a", {"control": ["anything"]})]


# --- python-ldap's entry cases that need no parser option (Tests/t_ldif.py), written anew -----------------------


def test_no_space_after_any_colon():
    assert parse("dn:cn=x,cn=y\nattrib:value\nattrib:value2\n") == [("cn=x,cn=y", {"attrib": ["value", "value2"]})]


def test_a_long_folded_binary_value():
    encoded = "A" * 666 + "=="  # 499 zero bytes, folded every 75 characters
    folded = "\n ".join(encoded[i : i + 75] for i in range(0, len(encoded), 75))
    [(_, entry)] = parse(f"dn: cn=x\nattrib:: {folded}\n \n")  # and a last continuation of nothing
    assert entry["attrib"] == ["\0" * 499]


def test_empty_values_among_others():
    entry = parse("dn: cn=x\na:\na: foo\nb:\nb: foo\n")[0][1]
    assert entry == {"a": ["", "foo"], "b": ["", "foo"]}
