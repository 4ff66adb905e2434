/*
 * grace: the library's version (include/grace/version.h, generated).
 */
#include "grace/version.h"

unsigned int grace_version(void) { return GRACE_VERSION_HEX; }

const char *grace_version_string(void) { return GRACE_VERSION_STRING; }
