#!/usr/bin/env python3
"""Long fuzz run of the relay's three input parsers (issue 6).

    python3 scripts/fuzz.py [--frames 1000000] [--configs 10000] [--argv 100000] [--seed N]

Pushes random and mutated frames through the frame decoder (both the
``decode`` API and the client's ``parse_from`` on a reused buffer), random
and mutated configs through both config loaders, and random argv through the
command-line parser.  A parser may return a result or raise its own error
type (FrameError, ConfigError, UsageError); anything else is a crash.  A
frame decision must also follow the rules of docs/frame-format.md, checked
against an independent reading of them, and an accepted config must survive
validate / dump / load unchanged.

Prints the counts, writes them to docs/reliability-fuzz.json (``--output``),
and exits 1 after any crash or wrong decision, printing a reproducer for the
first few of each kind.  Standard library only; the seed makes a run
repeatable.
"""

import argparse
import json
import os
import platform
import random
import shlex
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "files"))

from multicast_proxy import auth, cli, control, relay_config as config, frame, replay  # noqa: E402

REPRODUCERS_PER_KIND = 3
# Inputs longer than this are written to a file instead of printed.
PRINTABLE_INPUT = 400


class Findings:
    """Crashes and wrong decisions, grouped by kind so one bug is reported once, not a million times."""

    def __init__(self):
        self.repro_dir = None
        self.by_kind = {}

    def record(self, target, kind, data, detail, call):
        key = (target, kind)
        entry = self.by_kind.setdefault(key, {"target": target, "kind": kind, "count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) >= REPRODUCERS_PER_KIND:
            return
        text = repr(data)
        if len(text) > PRINTABLE_INPUT:
            if self.repro_dir is None:
                self.repro_dir = tempfile.mkdtemp(prefix="relay-fuzz-")
            path = os.path.join(self.repro_dir, "%s-%d-%d.repr" % (target, len(self.by_kind), entry["count"]))
            with open(path, "w") as handle:
                handle.write(text)
            shown = "ast.literal_eval(open(%r).read())" % path
        else:
            shown = text
        code = ("import ast; from multicast_proxy import cli, control, frame, replay, relay_config as config; "
                + call.format(shown))
        reproducer = "PYTHONPATH=files python3 -c " + shlex.quote(code)
        entry["examples"].append({"detail": detail, "reproducer": reproducer})
        print("\n[%s] %s\n%s\nreproduce: %s\n" % (target, kind, detail.rstrip(), reproducer), file=sys.stderr)

    @property
    def total(self):
        return sum(entry["count"] for entry in self.by_kind.values())

    def as_list(self):
        return [dict(entry) for entry in self.by_kind.values()]


def crash_detail():
    return traceback.format_exc(limit=-6)


def crash_kind(exc):
    """Exception type and the innermost line it came from: one bug, one kind."""
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return "%s at %s:%d" % (type(exc).__name__, os.path.basename(tb.tb_frame.f_code.co_filename), tb.tb_lineno)


# -- frames ------------------------------------------------------------------------

def reference_outcome(data):
    """docs/frame-format.md, "Decoding rules": a drop reason or (payload start, payload end)."""
    if len(data) < 4 or data[0] != 0x4D or data[1] != 0x43:
        return "malformed"
    if data[2] != 1:
        return "bad_version"
    if len(data) < 28 or data[3] & 0xFE:
        return "malformed"
    header_len = data[4]
    if not 28 <= header_len <= len(data):
        return "malformed"
    end = len(data) - 16 if data[3] & 1 else len(data)
    if end < header_len:
        return "malformed"
    return header_len, end


def random_bytes(rng, count):
    return rng.getrandbits(8 * count).to_bytes(count, "big") if count else b""


def random_frame(rng):
    tag = random_bytes(rng, 16) if rng.random() < 0.3 else None
    payload = random_bytes(rng, rng.choice((0, 1, 5, 16, 64, 200, 1400)))
    return frame.encode("%d.%d.%d.%d" % tuple(rng.getrandbits(8) for dummy in range(4)), rng.getrandbits(16),
                        "%d.%d.%d.%d" % tuple(rng.getrandbits(8) for dummy in range(4)), rng.getrandbits(16),
                        rng.getrandbits(64), payload, tos=rng.getrandbits(8), key_id=rng.getrandbits(8), tag=tag)


def mutate_frame(rng, valid):
    data = bytearray(valid)
    for dummy in range(rng.randint(1, 4)):
        choice = rng.random()
        if choice < 0.3 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif choice < 0.45 and data:
            data[rng.randrange(len(data))] = rng.getrandbits(8)
        elif choice < 0.6:
            del data[rng.randint(0, len(data)):]
        elif choice < 0.7:
            data += random_bytes(rng, rng.randint(1, 40))
        elif choice < 0.8 and len(data) > 4:
            data[4] = rng.choice((0, 27, 28, 29, 32, 44, 255, len(data) & 0xFF, rng.getrandbits(8)))
        elif choice < 0.9 and len(data) > 3:
            data[3] = rng.choice((0, 1, 2, 3, 0x80, rng.getrandbits(8)))
        elif len(data) > 2:
            data[2] = rng.choice((0, 1, 2, 255))
    return bytes(data)


def fuzz_frames(count, rng, findings):
    counts = {"total": 0, "random": 0, "mutated": 0, "valid": 0, "malformed": 0, "bad_version": 0}
    seeds = [random_frame(rng) for dummy in range(256)]
    # The client's receive buffer, reused for every datagram as the daemon does.
    buffer = bytearray(frame.MAX_UDP_PAYLOAD + 1)
    for index in range(count):
        if index % 64 == 0:
            seeds[rng.randrange(len(seeds))] = random_frame(rng)
        if rng.random() < 0.3:
            counts["random"] += 1
            data = random_bytes(rng, rng.choice((0, 1, 3, 4, 8, 27, 28, 29, 43, 44, 45, 100, rng.randint(0, 600))))
        else:
            counts["mutated"] += 1
            data = mutate_frame(rng, seeds[rng.randrange(len(seeds))])
        counts["total"] += 1
        expected = reference_outcome(data)
        try:
            decoded = frame.decode(data)
            outcome = (decoded.header_len, decoded.header_len + len(decoded.payload))
        except frame.FrameError as exc:
            outcome = exc.reason
        except Exception as exc:
            findings.record("frame.decode", crash_kind(exc), data, crash_detail(), "frame.decode({})")
            continue
        if outcome != expected:
            findings.record("frame.decode", "wrong decision", data, "decoded %r, the rules say %r"
                            % (outcome, expected), "frame.decode({})")
            continue
        counts["valid" if isinstance(outcome, tuple) else outcome] += 1
        # Same bytes through the client's path: stale bytes of the previous datagram stay in the buffer.
        buffer[:len(data)] = data
        try:
            parsed = frame.parse_from(buffer, len(data))
            client_outcome = (parsed[-2], parsed[-1])
        except frame.FrameError as exc:
            client_outcome = exc.reason
        except Exception as exc:
            findings.record("frame.parse_from", crash_kind(exc), data, crash_detail(),
                            "data = {}; frame.parse_from(bytearray(data) + bytearray(100), len(data))")
            continue
        if client_outcome != expected:
            findings.record("frame.parse_from", "wrong decision", data, "parsed %r, the rules say %r"
                            % (client_outcome, expected),
                            "data = {}; frame.parse_from(bytearray(data) + bytearray(100), len(data))")
    return counts


# -- configs -----------------------------------------------------------------------

SERVER_VALID = {"multi_group_array": [
    {"group_ip": "224.1.2.3", "server_port": 65535, "group_port": 65535, "member_array": ["192.168.1.1", "10.0.0.2"]},
    {"group_ip": "239.0.0.9", "server_port": 6000, "group_port": 5000, "member_array": [], "interface": "eth1"}]}
CLIENT_VALID = {"multi_server_info_array": [
    {"server_ip": "10.0.0.1", "server_port": 65535, "group_ip": "224.1.2.3", "group_port": 65535},
    {"server_ip": "10.0.0.2", "server_port": 6000, "group_ip": "239.0.0.9", "group_port": 5000}],
    "interface": "eth0"}
KEYS = ("multi_group_array", "multi_server_info_array", "interface", "group_ip", "server_port", "group_port",
        "member_array", "server_ip", "group_ipp", "")
STRINGS = ("", " ", "224.1.2.3", "239.255.255.255", "10.0.0.1", "0.0.0.0", "255.255.255.255", "1.2.3", "01.2.3.4",
           "256.0.0.1", "224.1.2.3 ", "\u0663.1.1.1", "\u00b9.1.1.1", "\ud800", "eth\udfff", "eth0", "eth0/1", "..",
           "a" * 16, "lo", "65535", "null")
NUMBERS = (0, 1, -1, 65535, 65536, 2 ** 63, -(2 ** 70), 1.0, 1.5, 1e308, float("inf"), float("nan"), True, False)


def random_value(rng, depth=0):
    roll = rng.random()
    if depth > 4 or roll < 0.45:
        return rng.choice((None, rng.choice(STRINGS), rng.choice(NUMBERS), rng.getrandbits(17),
                           "%d.%d.%d.%d" % tuple(rng.getrandbits(8) for dummy in range(4)),
                           "".join(chr(rng.randint(1, 0x2FFF)) for dummy in range(rng.randint(0, 8)))))
    if roll < 0.7:
        return [random_value(rng, depth + 1) for dummy in range(rng.randint(0, 4))]
    return dict((rng.choice(KEYS), random_value(rng, depth + 1)) for dummy in range(rng.randint(0, 5)))


def mutate_structure(rng, valid):
    """Change, drop or add one value somewhere in a copy of a valid config."""
    obj = json.loads(json.dumps(valid))
    for dummy in range(rng.randint(1, 3)):
        parent = obj
        while True:
            children = list(parent.items()) if isinstance(parent, dict) else list(enumerate(parent))
            if not children:
                break
            key, child = rng.choice(children)
            if isinstance(child, (dict, list)) and child and rng.random() < 0.7:
                parent = child
                continue
            roll = rng.random()
            if roll < 0.6:
                parent[key] = random_value(rng, 3)
            elif roll < 0.8:
                del parent[key]
            elif isinstance(parent, dict):
                parent[rng.choice(KEYS)] = random_value(rng, 3)
            else:
                parent.append(rng.choice((child, random_value(rng, 3))))
            break
    return obj


def mutate_text(rng, text):
    """The slips of a hand edit: deleted, inserted, replaced or repeated characters, a cut."""
    for dummy in range(rng.randint(1, 3)):
        index = rng.randint(0, len(text))
        roll = rng.random()
        if roll < 0.25:
            text = text[:index] + text[index + 1:]
        elif roll < 0.5:
            text = text[:index] + rng.choice('{}[],:"0\\-ne') + text[index:]
        elif roll < 0.65:
            text = text[:index] + chr(rng.randint(0, 0x10FFFF) if rng.random() < 0.2 else rng.randint(32, 126)) + \
                text[index + 1:]
        elif roll < 0.8:
            text = text[:index]
        else:
            end = rng.randint(index, len(text))
            text = text[:end] + text[index:end] + text[end:]
    return text


NON_UTF8 = (b"\xe9", b"\xff", b"\xc3", b"\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xfe\xff")


def non_utf8_bytes(rng, valid):
    """A config file as a legacy-encoding editor or a stray binary write leaves it: bytes that are not UTF-8."""
    roll = rng.random()
    if roll < 0.4:
        # latin-1 for an accented comment-like value somewhere in a valid file
        text = config.dump_config(valid)
        index = rng.randint(0, len(text))
        return (text[:index] + "caf\u00e9" + text[index:]).encode("latin-1")
    if roll < 0.8:
        data = bytearray(config.dump_config(valid).encode("utf-8"))
        for dummy in range(rng.randint(1, 3)):
            index = rng.randint(0, len(data))
            data[index:index] = rng.choice(NON_UTF8)
        return bytes(data)
    return random_bytes(rng, rng.randint(1, 400))


def random_config_text(rng, valid):
    roll = rng.random()
    if roll < 0.25:
        return "random", json.dumps(random_value(rng))
    if roll < 0.5:
        return "mutated_structure", json.dumps(mutate_structure(rng, valid))
    if roll < 0.8:
        return "mutated_text", mutate_text(rng, config.dump_config(valid))
    if roll < 0.95:
        return "non_utf8_bytes", non_utf8_bytes(rng, valid)
    depth = rng.choice((50, 500, 5000, 50000))
    return "deep_nesting", '{"%s": ' % next(iter(valid)) + "[" * depth + "]" * depth + "}"


def fuzz_configs(count, rng, findings, side):
    loader = config.load_server_config if side == "server" else config.load_client_config
    validate = config.validate_server_config if side == "server" else config.validate_client_config
    valid = SERVER_VALID if side == "server" else CLIENT_VALID
    name = "config.load_%s_config" % side
    call = name + "({}, \"fuzz.json\")"
    counts = {"total": 0, "accepted": 0, "rejected": 0, "random": 0, "mutated_structure": 0, "mutated_text": 0,
              "non_utf8_bytes": 0, "deep_nesting": 0}
    for dummy in range(count):
        kind, text = random_config_text(rng, valid)
        counts["total"] += 1
        counts[kind] += 1
        try:
            cfg = loader(text, "fuzz.json")
        except config.ConfigError:
            counts["rejected"] += 1
            continue
        except Exception as exc:
            findings.record(name, crash_kind(exc), text, crash_detail(), call)
            continue
        counts["accepted"] += 1
        try:
            stable = validate(cfg) == cfg and loader(config.dump_config(cfg), "fuzz.json") == cfg
        except Exception:
            findings.record(name, "accepted config does not reload", text, crash_detail(), call)
            continue
        if not stable:
            findings.record(name, "accepted config changes on dump/load", text, repr(cfg), call)
    return counts


# -- the other inputs: control requests, key files, the client's replay state ----------

KEYS_VALID = {"send_key_id": 1, "keys": [{"id": 1, "secret": "00" * 32}, {"id": 2, "secret": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}]}
STATE_VALID = {"highest": {"127.0.0.1 5000 239.1.1.1 5000": 7306263130521436161, "10.0.0.1 1 224.0.0.18 0": 0},
               "bound": ["127.0.0.1 5000 239.1.1.1 5000"]}
REQUEST_VALID = {"cmd": "stats"}


def _input_bytes(rng, valid):
    """Random bytes, non-UTF-8 edits, a mutated structure or hand-edit slips of ``valid``'s JSON, as bytes."""
    roll = rng.random()
    if roll < 0.15:
        return random_bytes(rng, rng.randint(0, 300))
    if roll < 0.25:
        return non_utf8_bytes(rng, valid)
    if roll < 0.5:
        return json.dumps(mutate_structure(rng, valid)).encode("utf-8", "surrogatepass")
    if roll < 0.6:
        return json.dumps(random_value(rng)).encode("utf-8", "surrogatepass")
    return mutate_text(rng, json.dumps(valid)).encode("utf-8", "surrogatepass")


def fuzz_inputs(count, rng, findings):
    """control.parse_request never raises; load_auth_keys raises only ConfigError; parse_state only ValueError."""
    counts = {"requests": 0, "requests_understood": 0, "key_files": 0, "key_files_accepted": 0,
              "replay_states": 0, "replay_states_accepted": 0}
    for dummy in range(count):
        data = _input_bytes(rng, REQUEST_VALID)
        counts["requests"] += 1
        try:
            cmd, error = control.parse_request(data)
        except Exception as exc:
            findings.record("control.parse_request", crash_kind(exc), data, crash_detail(), "control.parse_request({})")
        else:
            if (cmd is None) == (error is None) or (cmd is not None and cmd not in control.COMMANDS) or \
                    (error is not None and (error.get("ok") is not False or not error.get("error"))):
                findings.record("control.parse_request", "wrong decision", data, repr((cmd, error)),
                                "control.parse_request({})")
            counts["requests_understood"] += cmd is not None
        data = _input_bytes(rng, KEYS_VALID)
        counts["key_files"] += 1
        try:
            config.load_auth_keys(data, "fuzz-keys.json")
            counts["key_files_accepted"] += 1
        except config.ConfigError as exc:
            if "00" * 16 in str(exc):
                findings.record("config.load_auth_keys", "secret in the error", data, str(exc),
                                "config.load_auth_keys({}, 'fuzz-keys.json')")
        except Exception as exc:
            findings.record("config.load_auth_keys", crash_kind(exc), data, crash_detail(),
                            "config.load_auth_keys({}, 'fuzz-keys.json')")
        data = _input_bytes(rng, STATE_VALID)
        counts["replay_states"] += 1
        try:
            state = replay.parse_state(data)
        except ValueError:
            continue
        except Exception as exc:
            findings.record("replay.parse_state", crash_kind(exc), data, crash_detail(), "replay.parse_state({})")
            continue
        counts["replay_states_accepted"] += 1
        if replay.parse_state(replay.dump_state(state)) != state:
            findings.record("replay.parse_state", "accepted state changes on dump/parse", data, repr(state),
                            "replay.parse_state({})")
    return counts


# -- whole files, as the daemon and the CLIs read them ---------------------------------

def _file_cases(rng):
    """(kind, writer) pairs: each writer makes ``path`` into one hostile file."""
    limit = config.MAX_CONFIG_BYTES

    def write(data):
        def make(path):
            with open(path, "wb") as handle:
                handle.write(data)
        return make

    def sparse(size, head):
        def make(path):
            with open(path, "wb") as handle:
                handle.write(head)
                handle.truncate(size)
        return make

    def fifo(path):
        os.mkfifo(path, 0o600)

    cases = [
        ("huge_over_limit", sparse(limit + 1, b'{"multicast_group": [')),
        ("huge_nul_bytes", sparse(limit + rng.randint(2, 4096), b"")),
        ("huge_at_limit_whitespace", write(b"{}" + b" " * (limit - 2))),
        ("directory", os.mkdir),
        ("fifo", fifo),
        ("empty", write(b"")),
        ("bom", write(b"\xef\xbb\xbf{}")),
    ]
    for dummy in range(20):
        cases.append(("non_utf8", write(non_utf8_bytes(rng, SERVER_VALID))))
        cases.append(("random_bytes", write(random_bytes(rng, rng.randint(1, 2000)))))
    return cases


def fuzz_files(rng, findings):
    """read_config_text + loaders raise only ConfigError or OSError on hostile files; read_key_file only ConfigError."""
    counts = {"files": 0, "config_reads_refused": 0, "key_reads_refused": 0}
    with tempfile.TemporaryDirectory(prefix="fuzz-files-") as tmp:
        for index, (kind, make) in enumerate(_file_cases(rng)):
            path = os.path.join(tmp, "case-%d" % index)
            make(path)
            if os.path.isfile(path):
                os.chmod(path, 0o600)
            counts["files"] += 1
            for name, read in (("server config", lambda: config.load_server_config(config.read_config_text(path), path)),
                               ("client config", lambda: config.load_client_config(config.read_config_text(path), path))):
                try:
                    read()
                except (config.ConfigError, OSError):
                    counts["config_reads_refused"] += 1
                except Exception as exc:
                    findings.record(name + " file", crash_kind(exc), kind, crash_detail(), "a %s file" % kind)
            try:
                auth.read_key_file(path)
            except config.ConfigError:
                counts["key_reads_refused"] += 1
            except Exception as exc:
                findings.record("auth.read_key_file", crash_kind(exc), kind, crash_detail(), "a %s file" % kind)
    return counts


# -- command line ------------------------------------------------------------------

FLAGS = ("-A", "-D", "-C", "-P", "-S", "-L", "-R", "-H", "-j", "-q", "-m", "-p", "-g", "-i", "-s", "--add",
         "--delete", "--clear", "--stats", "--show", "--list", "--run", "--help", "--join", "--quit", "--multiip",
         "--port", "--gport", "--sport", "--ip", "--multi_ip", "--json", "--check-config", "--doctor", "-help",
         "-h", "--", "-", "--port=", "--json=1", "-AP", "-Am224.1.2.3", "\u2013q", "\u2014A", "\u2212m", "reload",
         "list")
VALUES = ("224.1.2.3", "239.0.0.1", "10.0.0.1", "10.0.0.1,10.0.0.2", ",", "65535", "0", "70000", "abc", "", " ",
          "\ud800", "/tmp/x.json", "-1")


def fuzz_argv(count, rng, findings):
    counts = {"total": 0, "parsed": 0, "usage_errors": 0}
    programs = cli.COMMANDS + ("multis", "")
    for dummy in range(count):
        program = rng.choice(programs)
        argv = []
        for dummy in range(rng.randint(0, 8)):
            roll = rng.random()
            if roll < 0.5:
                argv.append(rng.choice(FLAGS))
            elif roll < 0.85:
                argv.append(rng.choice(VALUES))
            else:
                argv.append("".join(chr(rng.randint(1, 0x7FF)) for dummy in range(rng.randint(0, 5))))
        counts["total"] += 1
        try:
            cli.parse(program, argv)
        except cli.UsageError:
            counts["usage_errors"] += 1
            continue
        except Exception as exc:
            findings.record("cli.parse", crash_kind(exc), (program, argv), crash_detail(), "cli.parse(*{})")
            continue
        counts["parsed"] += 1
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--frames", type=int, default=1000000, help="frames to decode (default 1,000,000)")
    parser.add_argument("--configs", type=int, default=10000, help="configs per loader (default 10,000)")
    parser.add_argument("--argv", type=int, default=100000, help="command lines to parse (default 100,000)")
    parser.add_argument("--inputs", type=int, default=20000,
                        help="control requests, key files and replay states, each (default 20,000)")
    parser.add_argument("--seed", type=int, help="random seed (default: chosen and printed)")
    parser.add_argument("--output", default=os.path.join(REPO, "docs", "reliability-fuzz.json"),
                        help="where to write the counts (default docs/reliability-fuzz.json); '-' for none")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    rng = random.Random(seed)
    findings = Findings()
    print("fuzz seed %d, python %s" % (seed, platform.python_version()), flush=True)

    started = time.monotonic()
    results = {"seed": seed, "python": platform.python_version()}
    results["frames"] = fuzz_frames(args.frames, rng, findings)
    print("frames:         %s" % json.dumps(results["frames"]), flush=True)
    results["server_configs"] = fuzz_configs(args.configs, rng, findings, "server")
    print("server configs: %s" % json.dumps(results["server_configs"]), flush=True)
    results["client_configs"] = fuzz_configs(args.configs, rng, findings, "client")
    print("client configs: %s" % json.dumps(results["client_configs"]), flush=True)
    results["argv"] = fuzz_argv(args.argv, rng, findings)
    print("command lines:  %s" % json.dumps(results["argv"]), flush=True)
    results["inputs"] = fuzz_inputs(args.inputs, rng, findings)
    print("other inputs:   %s" % json.dumps(results["inputs"]), flush=True)
    results["files"] = fuzz_files(rng, findings)
    print("whole files:    %s" % json.dumps(results["files"]), flush=True)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["failures"] = findings.total
    results["failure_kinds"] = findings.as_list()

    if args.output != "-":
        with open(args.output, "w") as handle:
            handle.write(json.dumps(results, indent=2, sort_keys=True) + "\n")
        print("written to %s" % args.output)
    if findings.total:
        print("FAILED: %d inputs crashed a parser or were decided wrongly, in %d kinds (reproducers above)"
              % (findings.total, len(findings.by_kind)), file=sys.stderr)
        return 1
    print("OK: no parser raised anything but its own error type (%.1f s)" % results["elapsed_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
