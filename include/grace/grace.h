/*
 * grace: the umbrella header, including every public module.
 *
 * It needs no other library's header: the modules that run on libuv or
 * take protobuf-c messages (grace/http.h, grace/grpc.h,
 * grace/grpc_client.h) only declare those libraries' types.  A program
 * that uses libuv or protobuf-c directly (a timer on a request's loop,
 * generated messages) includes their headers and links them itself; each
 * of those three headers says so at its top.
 *
 * Building against an installed grace:
 *   cc app.c $(pkg-config --cflags --libs grace)
 *   find_package(grace) + target_link_libraries(app PRIVATE grace::grace)
 */
#ifndef GRACE_GRACE_H
#define GRACE_GRACE_H

#include "grace/context.h"
#include "grace/duration.h"
#include "grace/error.h"
#include "grace/flags.h"
#include "grace/group.h"
#include "grace/grpc.h"
#include "grace/grpc_client.h"
#include "grace/grpc_status.h"
#include "grace/http.h"
#include "grace/log.h"
#include "grace/signal.h"
#include "grace/systemd.h"
#include "grace/tcp.h"
#include "grace/upgrade.h"
#include "grace/version.h"
#include "grace/worker.h"

#endif /* GRACE_GRACE_H */
