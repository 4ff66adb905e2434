/*
 * Internals of the context module shared with the signal module.
 */
#ifndef GRACE_CORE_CONTEXT_INT_H
#define GRACE_CORE_CONTEXT_INT_H

#include "grace/context.h"

/*
 * The one cancel context with static storage: a child of background that
 * ref and unref leave alone, for the signal context, which a signal may
 * cancel at any moment until the process is gone.
 */
grace_ctx *grace__ctx_static_cancel(void);

#endif /* GRACE_CORE_CONTEXT_INT_H */
