/*
 * Internals of the gRPC server (server.c) that other modules of the
 * library use.
 */
#ifndef GRACE_GRPC_SERVER_INT_H
#define GRACE_GRPC_SERVER_INT_H

#include "grace/duration.h"
#include "grace/grpc.h"

/*
 * Raises the close spread of the HTTP server under |srv| to |d| if |d| is
 * larger (grace__http_server_set_close_spread): any thread, before the
 * graceful stop begins.  Harmless, and without effect on the calls: gRPC
 * speaks HTTP/2 only, whose connections get their GOAWAY at once; it
 * matters only for HTTP/1.1 requests reaching the server's fallback.
 */
void grace__grpc_server_set_close_spread(grace_grpc_server *srv,
                                         grace_duration d);

#endif /* GRACE_GRPC_SERVER_INT_H */
