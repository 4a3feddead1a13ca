#!/usr/bin/env python3
"""Writes the seed corpus in fuzz/corpus/<target>/ from the WAMP conformance vectors
(../shared/wamp-testsuite): every listed encoding of every sample, per serializer, plus a few
hand-made edge cases. Re-run after the vectors change; the files are named by content hash."""
import hashlib
import json
import os
import pathlib
import struct

here = pathlib.Path(__file__).resolve().parent
suite = here.parent.parent / "shared" / "wamp-testsuite"
corpus = here / "corpus"


def frames():
    """{serializer: [bytes]} from every vector file."""
    found = {"json": [], "msgpack": [], "cbor": []}
    for path in sorted(suite.rglob("*.json")):
        if path.name == "SCHEMA.json":
            continue
        for sample in json.loads(path.read_text()).get("samples", []):
            for name, variants in sample.get("serializers", {}).items():
                if name not in found:
                    continue
                for variant in variants:
                    if "bytes_hex" in variant:
                        found[name].append(bytes.fromhex(variant["bytes_hex"]))
                    elif "bytes" in variant:
                        found[name].append(variant["bytes"].encode())
    return found


def write(target, data):
    folder = corpus / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)


def rawsocket(kind, payload):
    return bytes([kind]) + len(payload).to_bytes(3, "big") + payload


def main():
    found = frames()
    json_edges = [
        b'[48,1,{},"com.example.echo",[01]]',
        b'[48,1,{},"com.example.echo",["\xff"]]',
        b'[48,1,{},"p",["\\ud83d\\ude00", "\\ud800"]]',
        b'[48,1,{"k":1,"k":2},"p",[-0, 1e308, 1e-400, 18446744073709551616, "\\u0000AQID"]]',
        b'[70,1,{},[1.5e300,-9223372036854775808],{"a":{"b":[[]]},"\\u0000":"\\u0000x!"}]',
    ]
    for name, target in [("json", "decode_json"), ("msgpack", "decode_msgpack"), ("cbor", "decode_cbor")]:
        for frame in found[name]:
            write(target, frame)
    for frame in found["json"] + json_edges:
        write("decode_json", frame)
        write("json_differential", frame)
    # RawSocket: [limit, chunk seed] then frames of every kind, real messages inside.
    messages = found["json"][:20] + found["msgpack"][:10] + found["cbor"][:10]
    for i, message in enumerate(messages):
        stream = rawsocket(0, message) + rawsocket(1, b"ping") + rawsocket(2, b"")
        write("rawsocket_codec", bytes([24, i]) + stream)
    write("rawsocket_codec", bytes([24, 3]) + b"\x00\xff\xff\xff" + b" " * 100)
    write("rawsocket_codec", bytes([9, 0]) + rawsocket(0, b"x" * 600))
    write("rawsocket_codec", bytes([24, 1]) + b"\x08\x00\x00\x01x")
    for octet1 in [0xF1, 0xF2, 0xF3, 0x01, 0x72, 0xF0, 0xF4, 0x0F]:
        for reserved in [b"\x00\x00", b"\x00\x01"]:
            for limit in [16 * 1024 * 1024, 1024, 100_000, 0]:
                write("rawsocket_handshake", bytes([0x7F, octet1]) + reserved + struct.pack(">Q", limit))
    write("rawsocket_handshake", b"GET / HTTP/1.1")
    for target in sorted(os.listdir(corpus)):
        print(f"{target}: {len(os.listdir(corpus / target))} seeds")


main()
