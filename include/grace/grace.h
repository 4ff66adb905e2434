/*
 * grace: the umbrella header, including every public module.
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
#include "grace/upgrade.h"
#include "grace/worker.h"

#endif /* GRACE_GRACE_H */
