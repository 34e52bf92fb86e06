"""Property tests: the relay's three input parsers never fail in an unplanned way.

Every byte string a network peer can send, every config text an operator can
write and every argv a shell can pass must end in either a result or the
parser's own error type (FrameError, ConfigError, UsageError), which the
relay turns into a counted drop or a clear message.  Any other exception is a
crash of the daemon or a traceback for the operator.

This is the short run that belongs to the test suite (a few seconds);
scripts/fuzz.py pushes the same checks through a million frames.
"""

import json
import string

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from multicast_proxy import cli, relay_config as config, frame

QUICK = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- frames ---------------------------------------------------------------------

FRAME_REASONS = ("malformed", "bad_version")


def reference_outcome(data):
    """The decoding rules of docs/frame-format.md, written independently of frame.py.

    Returns the drop reason, or (header_len, payload_end, tag) for a valid frame.
    """
    if len(data) < 4 or data[:2] != b"MC":
        return "malformed"
    if data[2] != 1:
        return "bad_version"
    if len(data) < 28:
        return "malformed"
    flags, header_len = data[3], data[4]
    if flags & ~0x01:
        return "malformed"
    if not 28 <= header_len <= len(data):
        return "malformed"
    payload_end = len(data)
    if flags & 0x01:
        payload_end -= 16
        if payload_end < header_len:
            return "malformed"
    return header_len, payload_end, bytes(data[payload_end:]) if flags & 0x01 else None


def decode_outcome(data):
    try:
        decoded = frame.decode(data)
    except frame.FrameError as exc:
        assert exc.reason in FRAME_REASONS, exc.reason
        assert str(exc), "a drop needs a message for the log"
        return exc.reason
    return decoded.header_len, decoded.header_len + len(decoded.payload), decoded.tag


ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: "%d.%d.%d.%d" % t)
valid_frames = st.builds(
    lambda group, gport, src, sport, seq, payload, tos, key_id, tag: frame.encode(
        group, gport, src, sport, seq, payload, tos=tos, key_id=key_id, tag=tag),
    ipv4, st.integers(0, 65535), ipv4, st.integers(0, 65535), st.integers(0, 2 ** 64 - 1),
    st.binary(max_size=120), st.integers(0, 255), st.integers(0, 255),
    st.one_of(st.none(), st.binary(min_size=16, max_size=16)))


@st.composite
def mutated_frames(draw):
    """A valid frame with a few edits of the kinds a broken or hostile sender makes."""
    data = bytearray(draw(valid_frames))
    for dummy in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(("flip", "set", "cut", "extend", "header_len", "flags", "version")))
        if kind == "flip" and data:
            index = draw(st.integers(0, len(data) - 1))
            data[index] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[draw(st.integers(0, len(data))):]
        elif kind == "extend":
            data += draw(st.binary(min_size=1, max_size=40))
        elif kind == "header_len" and len(data) > 4:
            data[4] = draw(st.sampled_from((0, 27, 28, 29, 32, 44, 255, len(data) & 0xFF)))
        elif kind == "flags" and len(data) > 3:
            data[3] = draw(st.integers(0, 255))
        elif kind == "version" and len(data) > 2:
            data[2] = draw(st.integers(0, 255))
    return bytes(data)


@QUICK
@given(data=st.one_of(st.binary(max_size=200), mutated_frames()))
@example(data=b"")
@example(data=b"MC")
@example(data=b"MC\x01")
@example(data=b"MC\x01\x01" + bytes([28]) + bytes(23) + bytes(15))
def test_decoder_follows_the_documented_rules_on_any_bytes(data):
    assert decode_outcome(data) == reference_outcome(data)


@QUICK
@given(data=st.one_of(st.binary(max_size=120), mutated_frames()), stale=st.binary(max_size=64))
def test_client_buffer_decodes_only_the_received_bytes(data, stale):
    """The client reuses one receive buffer; bytes of an earlier, longer frame must not count."""
    buffer = bytearray(data) + bytearray(stale)
    try:
        parsed = frame.parse_from(buffer, len(data))
    except frame.FrameError as exc:
        assert exc.reason == reference_outcome(data)
        return
    expected = reference_outcome(data)
    assert (parsed[-2], parsed[-1]) == expected[:2]


@QUICK
@given(data=valid_frames)
def test_every_valid_frame_re_encodes_to_the_same_bytes(data):
    decoded = frame.decode(data)
    assert frame.encode(decoded.group_ip, decoded.group_port, decoded.src_ip, decoded.src_port, decoded.seq,
                        decoded.payload, tos=decoded.tos, key_id=decoded.key_id, tag=decoded.tag) == data


@QUICK
@given(data=mutated_frames())
def test_a_decoded_frame_reports_exactly_what_the_bytes_hold(data):
    try:
        decoded = frame.decode(data)
    except frame.FrameError:
        return
    tag_len = frame.TAG_LEN if decoded.tag is not None else 0
    assert decoded.payload == data[decoded.header_len:len(data) - tag_len]
    assert frame.ip_to_int(decoded.group_ip) == int.from_bytes(data[8:12], "big")
    assert decoded.seq == int.from_bytes(data[20:28], "big")


# -- config files ----------------------------------------------------------------

SERVER_KEYS = ("multi_group_array", "interface", "group_ip", "server_port", "group_port", "member_array")
CLIENT_KEYS = ("multi_server_info_array", "interface", "server_ip", "server_port", "group_ip", "group_port")
# Lone surrogates are legal in JSON text ("\ud800") and reach the validator as str.
awkward_text = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", " ", "\ud800", "eth\udfff", "\u0663.\u0661.\u0661.\u0661", "224.1.1.1 ", "01.2.3.4",
                     "\u00b2\u00b2\u00b4.1.1.1", "eth0/1", "a" * 16, ".", "..", "lo"]),
)
address_text = st.one_of(ipv4, st.sampled_from(["224.1.2.3", "239.255.255.255", "0.0.0.0", "255.255.255.255",
                                                "10.0.0.1", "1.2.3", "1.2.3.4.5", "256.1.1.1"]))
port_value = st.one_of(st.integers(-2, 70000), st.sampled_from([0, 1, 65535, 65536, True, 1.5, "80", None,
                                                               2 ** 70]))
scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), awkward_text,
                   address_text, port_value)


def json_values(keys):
    return st.recursive(
        scalar,
        lambda children: st.one_of(st.lists(children, max_size=4),
                                   st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=8)),
                                                   children, max_size=5)),
        max_leaves=25)


server_groups = st.fixed_dictionaries(
    {"group_ip": address_text, "server_port": port_value, "member_array": st.lists(address_text, max_size=5)},
    optional={"group_port": port_value, "interface": awkward_text})
server_structures = st.one_of(
    json_values(SERVER_KEYS),
    st.fixed_dictionaries({"multi_group_array": st.lists(server_groups, max_size=4)},
                          optional={"interface": awkward_text}))
client_entries = st.fixed_dictionaries(
    {"server_ip": address_text, "server_port": port_value, "group_ip": address_text, "group_port": port_value})
client_structures = st.one_of(
    json_values(CLIENT_KEYS),
    st.fixed_dictionaries({"multi_server_info_array": st.lists(client_entries, max_size=4)},
                          optional={"interface": awkward_text}))

VALID_SERVER_TEXT = config.dump_config({"multi_group_array": [
    {"group_ip": "224.1.2.3", "server_port": 65535, "group_port": 65535,
     "member_array": ["192.168.1.1", "192.168.1.2"]},
    {"group_ip": "239.0.0.9", "server_port": 6000, "group_port": 5000, "member_array": [], "interface": "eth1"}]})
VALID_CLIENT_TEXT = config.dump_config({"multi_server_info_array": [
    {"server_ip": "10.0.0.1", "server_port": 65535, "group_ip": "224.1.2.3", "group_port": 65535},
    {"server_ip": "10.0.0.2", "server_port": 6000, "group_ip": "239.0.0.9", "group_port": 5000}],
    "interface": "eth0"})


@st.composite
def mutated_text(draw, valid_text):
    """A valid file after the slips of a hand edit: a deleted, doubled or changed character, a cut."""
    text = valid_text
    for dummy in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(("delete", "insert", "replace", "cut", "duplicate")))
        if kind == "delete":
            text = text[:index] + text[index + 1:]
        elif kind == "insert":
            text = text[:index] + draw(st.sampled_from(list('{}[],:"0\\') + ["\\ud800", "-1", "null"])) + text[index:]
        elif kind == "replace":
            text = text[:index] + draw(st.characters()) + text[index + 1:]
        elif kind == "cut":
            text = text[:index]
        else:
            end = draw(st.integers(index, len(text)))
            text = text[:end] + text[index:end] + text[end:]
    return text


LOADERS = [(config.load_server_config, server_structures, VALID_SERVER_TEXT, config.validate_server_config),
           (config.load_client_config, client_structures, VALID_CLIENT_TEXT, config.validate_client_config)]
LOADER_IDS = ["server", "client"]


def load_outcome(loader, text):
    """The loaded config, or None after a ConfigError; anything else fails the test."""
    try:
        return loader(text, "test.json")
    except config.ConfigError as exc:
        assert str(exc).startswith("test.json"), "the message must name the file: %s" % exc
        return None


def assert_accepted_config_is_stable(cfg, loader, validate):
    """What a loader accepts is already normal: it survives validation, dump and load unchanged."""
    assert validate(cfg) == cfg
    assert loader(config.dump_config(cfg), "test.json") == cfg


@pytest.mark.parametrize("loader, structures, valid_text, validate", LOADERS, ids=LOADER_IDS)
def test_valid_sample_files_load(loader, structures, valid_text, validate):
    cfg = loader(valid_text, "test.json")
    assert config.dump_config(cfg) == valid_text


@pytest.mark.parametrize("loader, structures, valid_text, validate", LOADERS, ids=LOADER_IDS)
def test_loader_on_any_json_structure(loader, structures, valid_text, validate):
    @QUICK
    @given(obj=structures)
    def check(obj):
        cfg = load_outcome(loader, json.dumps(obj))
        if cfg is not None:
            assert_accepted_config_is_stable(cfg, loader, validate)

    check()


@pytest.mark.parametrize("loader, structures, valid_text, validate", LOADERS, ids=LOADER_IDS)
def test_loader_on_hand_edit_slips(loader, structures, valid_text, validate):
    @QUICK
    @given(text=mutated_text(valid_text))
    def check(text):
        cfg = load_outcome(loader, text)
        if cfg is not None:
            assert_accepted_config_is_stable(cfg, loader, validate)

    check()


@pytest.mark.parametrize("loader, structures, valid_text, validate", LOADERS, ids=LOADER_IDS)
def test_loader_on_arbitrary_text(loader, structures, valid_text, validate):
    @QUICK
    @given(text=st.text(alphabet=st.sampled_from(list('{}[],:"\\ ud80fe01.') + list(string.printable)),
                        max_size=60))
    def check(text):
        cfg = load_outcome(loader, text)
        if cfg is not None:
            assert_accepted_config_is_stable(cfg, loader, validate)

    check()


@pytest.mark.parametrize("loader", [config.load_server_config, config.load_client_config], ids=LOADER_IDS)
@pytest.mark.parametrize("depth", [10, 2000, 100000])
def test_deeply_nested_json_is_a_config_error(loader, depth):
    # A runaway generator or a hostile file; json recurses once per level.
    with pytest.raises(config.ConfigError):
        loader("[" * depth + "]" * depth, "test.json")
    with pytest.raises(config.ConfigError):
        loader('{"multi_group_array": ' + "[" * depth, "test.json")


@pytest.mark.parametrize("where", ["interface", "group"])
def test_lone_surrogate_in_an_interface_name_is_a_config_error(where):
    if where == "interface":
        text = '{"multi_group_array": [], "interface": "eth\\ud800"}'
    else:
        text = ('{"multi_group_array": [{"group_ip": "224.1.2.3", "server_port": 5000, "member_array": [],'
                ' "interface": "\\udfff"}]}')
    with pytest.raises(config.ConfigError) as info:
        config.load_server_config(text, "test.json")
    assert "interface" in str(info.value)


# -- command line ------------------------------------------------------------------

FLAG_TOKENS = ["-A", "-D", "-C", "-P", "-S", "-L", "-R", "-H", "-j", "-q", "-m", "-p", "-g", "-i", "-s",
               "--add", "--delete", "--clear", "--stats", "--show", "--list", "--run", "--help", "--join",
               "--quit", "--multiip", "--port", "--gport", "--sport", "--ip", "--multi_ip", "--json",
               "--check-config", "--doctor", "-help", "-h", "--", "-", "--port=", "--json=1", "-AP", "-m224.1.2.3",
               "\u2013q", "\u2014A", "\u2212m", "reload", "list"]
VALUE_TOKENS = ["224.1.2.3", "239.0.0.1", "10.0.0.1", "10.0.0.1,10.0.0.2", "10.0.0.1,,10.0.0.2", "65535", "0",
                "70000", "abc", "", " ", "\ud800", "/tmp/x.json"]
argv_lists = st.lists(st.one_of(st.sampled_from(FLAG_TOKENS), st.sampled_from(VALUE_TOKENS), st.text(max_size=6)),
                      max_size=8)


@settings(max_examples=200, deadline=None)
@given(program=st.sampled_from(cli.COMMANDS + ("multis", "")), argv=argv_lists)
def test_parser_raises_only_usage_errors(program, argv):
    try:
        action = cli.parse(program, argv)
    except cli.UsageError as exc:
        assert str(exc) and exc.usage, "a refusal says what is wrong and how to call the command"
        return
    assert action.program == program
    if program in (cli.SERVER, cli.CLIENT):
        rules = cli._SERVER_RULES if program == cli.SERVER else cli._CLIENT_RULES
        assert action.command in rules
        required, _optional = rules[action.command]
        for field in required:
            value = action.members if field in ("join", "quit") else getattr(action, field)
            assert value is not None, (field, action)
    else:
        assert action.command in ("prompt", "reload", "list", "help")
