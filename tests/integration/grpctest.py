"""Helpers shared by the gRPC integration tests: Debian's python3-grpcio
(importable by /usr/bin/python3, which runs these tests) and a test case
that closes the channels it opened.
"""

import unittest

import gracetest

try:
    import grpc
except ImportError:  # pragma: no cover - depends on the machine
    grpc = None


def IDENT(x):
    """Serializer and deserializer of raw message bytes."""
    return x


needs_grpc = unittest.skipUnless(
    grpc is not None, "python3-grpcio is not importable by /usr/bin/python3")


class GrpcTestCase(gracetest.ProgramTestCase):
    """A ProgramTestCase whose gRPC channels are closed after the test."""

    def setUp(self):
        super().setUp()
        self.channels = []

    def tearDown(self):
        for ch in self.channels:
            ch.close()
        super().tearDown()

    def channel(self, port, options=None):
        ch = grpc.insecure_channel("127.0.0.1:%d" % port, options=options)
        self.channels.append(ch)
        return ch
