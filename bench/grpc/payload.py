#!/usr/bin/python3
"""Write h2load's -d request body for Greeter.SayHello: one gRPC message.

gRPC's length-prefixed message (PROTOCOL-HTTP2.md): a 1-byte compressed flag
(0), a 4-byte big-endian length, then the protobuf bytes of
HelloRequest{name, duration} (field 1 and 2, wire type 2: tag byte, varint
length, UTF-8 bytes; proto3 leaves an empty field out).

    /usr/bin/python3 bench/grpc/payload.py OUT [--name world] [--duration D]

Default: HelloRequest{name:"world"}, 12 bytes: 00 00000007 0a05776f726c64.
Also used as a module (hello_request, frame, hello_reply) by the gRPC
benchmarks. Standard library only.
"""

import argparse
import struct
import sys


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _string_field(number, text):
    data = text.encode()
    if not data:
        return b""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def hello_request(name="world", duration=""):
    """HelloRequest{name, duration} in protobuf wire format."""
    return _string_field(1, name) + _string_field(2, duration)


def hello_reply(message):
    """HelloReply{message} in protobuf wire format."""
    return _string_field(1, message)


def frame(msg):
    """The gRPC length-prefixed message: flag 0, 4-byte length, bytes."""
    return struct.pack(">BI", 0, len(msg)) + msg


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--name", default="world")
    ap.add_argument("--duration", default="")
    args = ap.parse_args(argv[1:])
    with open(args.out, "wb") as f:
        f.write(frame(hello_request(args.name, args.duration)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
